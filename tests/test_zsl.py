"The label-set family's data: candidate sets and the GBU split reader on files written in xlsa17's format."
import numpy as np, pytest, torch
from pathlib import Path
from PIL import Image
from scipy.io import savemat
from czsl_workbench.methods.zsl import make_candidates, candidate_stats, load_gbu, map_image_path, GBUError

def write(d, n_classes=3, labels=(1, 2, 3, 3), files=None, **over):
    d = Path(d); d.mkdir(parents=True, exist_ok=True)
    files = files or [f'/BS/xian/work/data/Animals_with_Attributes2//JPEGImages/c{l}/c{l}_{i}.jpg' for i, l in enumerate(labels)]
    res = dict(features=np.ones((2048, len(labels))), labels=np.array(labels, float)[:, None],
               image_files=np.array([[f] for f in files], dtype=object))
    att = dict(att=np.ones((5, n_classes)), allclasses_names=np.array([[f'c{i + 1}'] for i in range(n_classes)], dtype=object),
               trainval_loc=np.array([[1], [2]]), test_seen_loc=np.array([[2]]), test_unseen_loc=np.array([[3], [4]]))
    for k, v in over.items(): (res if k in res else att)[k] = v
    savemat(d/'res101.mat', res); savemat(d/'att_splits.mat', att)
    return files

def test_awa2_style_paths_with_a_double_slash_map_onto_the_image_root(tmp_path):
    files = write(tmp_path/'AWA2')
    for f in files:
        p = tmp_path/'AwA2'/'JPEGImages'/Path(f).parent.name/Path(f).name; p.parent.mkdir(parents=True, exist_ok=True)
        Image.new('RGB', (2, 2)).save(p)
    g = load_gbu(tmp_path/'AWA2', tmp_path/'AwA2')
    assert g.images[3] == tmp_path/'AwA2'/'JPEGImages'/'c3'/'c3_3.jpg' and g.seen.tolist() == [0, 1] and g.unseen.tolist() == [2]
    assert map_image_path('/somewhere/else/x.jpg', tmp_path/'AwA2') is None

def test_inconsistent_files_are_named(tmp_path):
    write(tmp_path/'a', n_classes=4, labels=(1, 2, 3, 4), att=np.ones((5, 3)))
    with pytest.raises(GBUError, match='att has 3 classes'): load_gbu(tmp_path/'a')
    write(tmp_path/'b', labels=(1, 2, 3, 4))
    with pytest.raises(GBUError, match=r'labels must lie in 1\.\.3, got 1\.\.4'): load_gbu(tmp_path/'b')
    (tmp_path/'c').mkdir(); (tmp_path/'c'/'att_splits.mat').write_bytes(b'not a mat file'); (tmp_path/'c'/'res101.mat').write_bytes(b'x')
    with pytest.raises(GBUError, match='att_splits.mat: not a readable MATLAB file'): load_gbu(tmp_path/'c')

def test_candidates_never_name_an_unseen_class_and_record_their_sizes():
    y = torch.tensor([0, 1, 2, 2, 1])
    S = make_candidates(y, 3, 1.0)
    assert S.shape == (5, 3) and S.all()                               # q = 1: every seen class, and only seen classes
    st = candidate_stats(make_candidates(y, 3, 0.0))
    assert st == dict(mean=1.0, hist={1: 5}, singletons=1.0)
    with pytest.raises(ValueError, match=r'q must lie in \[0, 1\]'): make_candidates(y, 3, 1.5)
    with pytest.raises(ValueError, match=r'related must be \[3, 3\]'): make_candidates(y, 3, .5, kind='confusable', related=torch.ones(2, 2))

def test_features_and_labels_of_different_lengths_are_named(tmp_path):
    write(tmp_path/'d', features=np.ones((2048, 3)))
    with pytest.raises(GBUError, match='features hold 3 images, labels 4'): load_gbu(tmp_path/'d')
