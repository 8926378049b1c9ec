"""LayerFeatureOptimizer for a first-time user coming from Captum: what a run keeps, and the
messages a usual slip gets (a layer of the original model after copy.deepcopy, per-example
labels as `target`, a layer with several inputs, a dict of heads)."""
import copy
import re
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from deepresolve_captum import LayerFeatureOptimizer


def _onehot(n, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    return nn.functional.one_hot(torch.randint(0, 4, (n, length), generator=g), 4) \
        .permute(0, 2, 1).float()


class SigmoidNet(nn.Module):
    """conv1 -> relu1 -> conv2 -> relu2 -> mean -> fc -> act (Sigmoid)."""

    def __init__(self, n_out=3):
        super().__init__()
        self.conv1, self.relu1 = nn.Conv1d(4, 6, 5), nn.ReLU()
        self.conv2, self.relu2 = nn.Conv1d(6, 6, 3), nn.ReLU()
        self.fc, self.act = nn.Linear(6, n_out), nn.Sigmoid()

    def forward(self, x):
        return self.act(self.fc(self.relu2(self.conv2(self.relu1(self.conv1(x)))).mean(2)))


def _logits_net(n_out=3):
    torch.manual_seed(0)
    m = SigmoidNet(n_out).eval()
    m.act = nn.Identity()
    return m


QUIET = dict(n_starts=2, l2=1.0, seed=0, max_steps=30)


@pytest.mark.filterwarnings("ignore:.*starts stopped at max_steps")
def test_the_last_calls_scores_stay_in_the_diagnostics_whatever_is_returned():
    """c.md #3: fims = opt.attribute(...) the Captum way, or fiv_only=True, keeps the (C, T)
    scores that summarize needs in opt.diagnostics.scores."""
    m, x = _logits_net(), _onehot(6, 20)
    opt = LayerFeatureOptimizer(m, m.relu1)
    fims, scores = opt.attribute(x, target=[0, 2], return_scores=True, **QUIET)
    kept = opt.diagnostics.scores
    assert isinstance(kept, np.ndarray) and kept.shape == (2, 2) and kept.dtype == np.float32
    np.testing.assert_array_equal(kept, scores.numpy())
    scores[0, 0] = 99.0                                # a copy, not a view of the result
    assert kept[0, 0] != 99.0
    fims_only = opt.attribute(x, target=[0, 2], **QUIET)             # return_scores=False
    assert torch.equal(fims_only, fims)
    np.testing.assert_array_equal(opt.diagnostics.scores, kept)
    opt.attribute(x, target=[0, 2], fiv_only=True, **QUIET)  # what summarize(fivs, ...) needs
    np.testing.assert_array_equal(opt.diagnostics.scores, kept)
    # a bfloat16 output: numpy has none, float32 holds it exactly
    m16 = _logits_net().to(torch.bfloat16)
    s16 = LayerFeatureOptimizer(m16, m16.relu1)
    _, sc = s16.attribute(x.to(torch.bfloat16), target=[1], return_scores=True, **QUIET)
    assert s16.diagnostics.scores.dtype == np.float32
    np.testing.assert_array_equal(s16.diagnostics.scores, sc.float().numpy())


def test_a_layer_of_the_original_after_deepcopy_names_the_copys_layer():
    """c.md #4: the Sigmoid advice (deepcopy, swap in Identity) says to pick the layer from the
    copy, and an original's layer passed with the copy is called what it is."""
    torch.manual_seed(0)
    model, x = SigmoidNet().eval(), _onehot(6, 20)
    with pytest.warns(UserWarning, match=r"setattr\(m, 'act', torch\.nn\.Identity\(\)\), and "
                                         r"pick the layer from the copy: m\.conv2\."):
        LayerFeatureOptimizer(model, model.conv2).attribute(x, target=[0], n_starts=1, l2=1.0,
                                                            max_steps=30)
    m = copy.deepcopy(model)
    m.act = nn.Identity()
    with pytest.raises(ValueError, match=r"layer Conv1d was not reached by the forward pass: it "
                                         r"is not a submodule of forward_func \(SigmoidNet\) "
                                         r"but of another model \(after copy\.deepcopy, pick the "
                                         r"layer from the copy, e\.g\. m\.conv2, with m the"):
        LayerFeatureOptimizer(m, model.conv2).attribute(x, target=[0], **QUIET)
    # a parameter-free layer has several look-alikes: all are offered
    with pytest.raises(ValueError, match=r"one of m\.relu1, m\.relu2, with m the model"):
        LayerFeatureOptimizer(m, model.relu1).attribute(x, target=[0], **QUIET)
    # a function wrapping the copy: nothing to search, the plain message
    with pytest.raises(ValueError, match=r"was not reached by the forward pass: choose a module"), \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="forward_func is not an nn.Module")
        LayerFeatureOptimizer(lambda t: m(t), model.conv2).attribute(x, target=[0], **QUIET)
    # a function wrapping the model that holds the layer is fine, as before
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="forward_func is not an nn.Module")
        warnings.filterwarnings("ignore", message=".*starts stopped at max_steps")
        out = LayerFeatureOptimizer(lambda t: m(t), m.conv2).attribute(x, target=[0], **QUIET)
    assert out.shape == (1, 2, 6, 14)


def test_module_expr_writes_python_that_finds_the_module():
    from deepresolve_captum._modules import module_expr

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv1d(4, 4, 3), nn.ReLU())
            self.heads = nn.ModuleDict({"a-b": nn.Linear(2, 2), "ok": nn.Linear(2, 2)})

    m = Holder()
    for path, want in [("features.1", "m.features[1]"), ("heads.ok", "m.heads.ok"),
                       ("heads.a-b", "m.get_submodule('heads.a-b')")]:
        assert module_expr(m, path) == want
        assert eval(want, {"m": m}) is m.get_submodule(path)


class Odd(nn.Module):
    """Children whose names are not their positions, keys that are no attributes, nesting."""
    attr = 5                                      # a class attribute shadowing a child's name

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(OrderedDict([("1", nn.Conv1d(4, 6, 5)), ("0", nn.ReLU()),
                                               ("3", nn.Conv1d(6, 6, 3))]))
        self.body.add_module("5", nn.ReLU())
        self.zero = nn.Sequential(OrderedDict([("01", nn.ReLU()), ("1", nn.ReLU())]))
        self.listed = nn.ModuleList([nn.ReLU(), nn.ReLU()])
        self.listed.add_module("7", nn.ReLU())
        self.heads = nn.ModuleDict({"0": nn.Sequential(OrderedDict([("2", nn.ReLU())])),
                                    "class": nn.ModuleList([nn.Sequential(nn.ReLU())]),
                                    "a-b": nn.Identity()})
        self._modules["attr"] = nn.ReLU()


def test_module_expr_finds_children_whose_names_are_not_their_positions():
    """review r1 #1: Sequential (and ModuleList) index by position, so m.body[1] for a child
    named "1" at position 0 was another module, and m.body[3] an IndexError; every module of
    odd Sequentials, ModuleLists, ModuleDicts and their nesting is now found."""
    from deepresolve_captum._modules import module_expr
    m = Odd()
    for path, module in m.named_modules(remove_duplicate=False):
        if path:
            expr = module_expr(m, path)
            assert eval(expr, {"m": m}) is module, (path, expr)
    assert module_expr(m, "body.1") == "m.get_submodule('body.1')"
    assert module_expr(m, "listed.1") == "m.listed[1]"
    assert module_expr(m, "heads.class.0.0") == "m.get_submodule('heads.class.0.0')"


@pytest.mark.filterwarnings("ignore:.*starts stopped at max_steps")
def test_per_example_labels_as_a_tensor_warn_once_at_the_users_line():
    """c.md #6: Captum's target=labels (one per example) as a tensor or array warns, once, at
    the caller's line; a list is the way to say 'these are the classes'."""
    m, x = _logits_net(n_out=8), _onehot(4, 20)
    opt = LayerFeatureOptimizer(m, m.relu1)
    labels = [5, 1, 7, 2]
    for given in (torch.tensor(labels), np.array(labels)):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            opt.attribute(x, target=given, **QUIET)
        hits = [w for w in seen if "one per example of `inputs`" in str(w.message)]
        assert len(hits) == 1 and hits[0].category is UserWarning
        assert hits[0].filename == __file__, hits[0].filename
        assert "pass them as a list" in str(hits[0].message)
    for quiet in (labels, torch.tensor(labels[:3]), torch.tensor(3)):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            opt.attribute(x, target=quiet, **QUIET)
        assert not [w for w in seen if "one per example" in str(w.message)], quiet
    with warnings.catch_warnings(record=True) as seen:              # N = 1: no labels to mix up
        warnings.simplefilter("always")
        opt.attribute(x[:1], target=torch.tensor([3]), **QUIET)
    assert not [w for w in seen if "one per example" in str(w.message)]


class Gate(nn.Module):
    def forward(self, a, b):
        return a * torch.sigmoid(b)


class GateNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.ca, self.cb = nn.Conv1d(4, 8, 5, padding=2), nn.Conv1d(4, 8, 5, padding=2)
        self.gate, self.fc = Gate(), nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.gate(self.ca(x), self.cb(x)).amax(2))


def test_a_layer_input_of_several_tensors_says_what_to_do():
    """c.md #7: the refusal names the modules that make the inputs and the two ways out."""
    torch.manual_seed(0)
    m = GateNet().eval()
    with pytest.raises(TypeError, match=r"not one tensor \(2 positional arguments\); H must be a "
                                        r"single tensor\. Optimise the output of the module that "
                                        r"produces one of them \(model\.ca, model\.cb here\), with "
                                        r"attribute_to_layer_input=False, or .* module of its own"):
        LayerFeatureOptimizer(m, m.gate).attribute(_onehot(3, 20), target=0,
                                                   attribute_to_layer_input=True, **QUIET)
    assert not any(mod._forward_hooks or mod._forward_pre_hooks for mod in m.modules())


class OddGateNet(nn.Module):
    """Layers in Sequentials whose children's names are not their positions (OrderedDict keys
    "1", "0"; add_module("5")), a Gate fed by two of them, a Sigmoid head."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(OrderedDict([("1", nn.Conv1d(4, 6, 5)), ("0", nn.ReLU())]))
        self.body.add_module("5", nn.Conv1d(6, 6, 3))
        self.pair = nn.Sequential(OrderedDict([("1", nn.Conv1d(6, 6, 1)),
                                               ("0", nn.Conv1d(6, 6, 1))]))
        self.gate, self.head = Gate(), nn.Sequential(nn.Linear(6, 3), nn.Sigmoid())

    def forward(self, x):
        h = self.body(x)
        return self.head(self.gate(self.pair.get_submodule("1")(h),
                                   self.pair.get_submodule("0")(h)).mean(2))


def test_every_message_naming_a_module_writes_python_that_finds_it():
    """review r1 #1: the Sigmoid advice, the deepcopy hint and the several-inputs hint wrote
    m.body[5] (an IndexError: Sequential indexes by position) for the child named "5", and
    m.body[1] / model.pair[1] for the child named "1" at position 0 (another module). Each
    expression the messages print is run here on the model it names."""
    torch.manual_seed(0)
    model, x = OddGateNet().eval(), _onehot(3, 20)
    five, one = model.body.get_submodule("5"), model.body.get_submodule("1")
    with pytest.warns(UserWarning, match="pick the layer from the copy") as rec:
        LayerFeatureOptimizer(model, five).attribute(x, target=0, **QUIET)
    advice = next(str(r.message) for r in rec if "pick the layer from the copy" in str(r.message))
    code, pick = re.search(r"pass a copy with that module replaced: (.+), and pick the layer "
                           r"from the copy: (.+)\.$", advice).groups()
    scope = {"copy": copy, "torch": torch, "model": model}
    exec(code, scope)                                   # m = copy.deepcopy(model); setattr(...)
    m = scope["m"]
    assert isinstance(m.head[1], nn.Identity) and isinstance(model.head[1], nn.Sigmoid)
    assert eval(pick, {"m": m}) is m.body.get_submodule("5")
    for layer, name in ((five, "5"), (one, "1")):        # the original's layer, the copy passed
        with pytest.raises(ValueError, match="not a submodule of forward_func") as err:
            LayerFeatureOptimizer(m, layer).attribute(x, target=0, **QUIET)
        expr = re.search(r"e\.g\. (.+), with m the model you pass", str(err.value)).group(1)
        assert eval(expr, {"m": m}) is m.body.get_submodule(name), expr
    with pytest.raises(TypeError, match="produces one of them") as err:
        LayerFeatureOptimizer(model, model.gate).attribute(x, target=0,
                                                           attribute_to_layer_input=True, **QUIET)
    made = re.search(r"produces one of them \((.+) here\)", str(err.value)).group(1)
    assert [eval(e, {"model": model}) for e in made.split(", ")] == \
        [model.pair.get_submodule("1"), model.pair.get_submodule("0")], made


class DictHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 4, 5)
        self.count = nn.Linear(4, 1)

    def forward(self, x):
        h = self.conv(x)
        return {"profile": h, "counts": self.count(h.mean(2))}


def test_a_dict_output_is_told_by_its_keys():
    """c.md #9: a dict of heads is answered with its keys, not with model(x)[1]."""
    m = DictHeads().eval()
    with pytest.raises(TypeError, match=r"got a dict with keys \['profile', 'counts'\]: wrap .*"
                                        r"\(e\.g\. model\(x\)\['counts'\]\)"):
        LayerFeatureOptimizer(m, m.conv).attribute(_onehot(3, 20), target=0, **QUIET)


class KeyedHeads(nn.Module):
    """A dict output with the given keys, in that order (the first holds the logits)."""

    def __init__(self, keys):
        super().__init__()
        self.keys, self.conv, self.fc = keys, nn.Conv1d(4, 4, 5), nn.Linear(4, 3)

    def forward(self, x):
        h = self.conv(x)
        return dict(zip(self.keys, (self.fc(h.mean(2)), h)))


@pytest.mark.parametrize("keys, pick", [
    (("logits", "hidden_states"), r"model\(x\)\['logits'\]"),          # a Hugging Face output
    (("class_logits", "features"), r"model\(x\)\['class_logits'\]"),
    (("y", "h"), r"model\(x\)\[key\] with one of those keys"),         # no name says: generic
])
def test_a_dict_output_suggests_a_logits_key_not_the_last(keys, pick):
    """review r1 #2: the example was the last key, 'hidden_states' for a Hugging Face-style
    {'logits', 'hidden_states'}: a logits-like key is suggested when there is one, else none."""
    m = KeyedHeads(keys).eval()
    with pytest.raises(TypeError, match=r"\(e\.g\. " + pick + r"\), so that its mode"):
        LayerFeatureOptimizer(m, m.conv).attribute(_onehot(3, 20), target=0, **QUIET)


@pytest.mark.filterwarnings("ignore:.*starts stopped at max_steps")
def test_attribute_in_blocks_warns_of_per_example_labels_once_at_the_users_line(tmp_path):
    """review r1 #3: attribute_in_blocks hands attribute list slices of the targets, so the
    per-example-labels warning that attribute gives for target=tensor (one per example of
    `inputs`) never came; it now comes once, at the caller's line, and a list stays quiet."""
    from deepresolve_captum.blocks import attribute_in_blocks
    m, x = _logits_net(n_out=8), _onehot(4, 20)
    opt = LayerFeatureOptimizer(m, m.relu1)
    kw = dict(block_size=2, n_starts=1, l2=1.0, seed=0, max_steps=5)
    for i, (target, n_warned) in enumerate([(torch.tensor([5, 1, 7, 2]), 1),
                                            (np.array([5, 1, 7, 2]), 1), ([5, 1, 7, 2], 0)]):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            attribute_in_blocks(opt, x, target=target, folder=tmp_path / str(i), **kw)
        hits = [w for w in seen if "one per example of `inputs`" in str(w.message)]
        assert len(hits) == n_warned, [str(w.message) for w in hits]
        assert all(h.filename == __file__ for h in hits), [h.filename for h in hits]


class _AttentionPool(torch.nn.Module):
    """Conv features pooled by a softmax over positions: the last module to run is a Softmax,
    but the output is a weighted sum after it, i.e. logits."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv1d(4, 6, 5)
        self.attn = torch.nn.Conv1d(6, 1, 1)
        self.head = torch.nn.Linear(6, 2)
        self.soft = torch.nn.Softmax(dim=-1)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        z = self.head(h.transpose(1, 2)).transpose(1, 2)        # (N, 2, L')
        return (z * self.soft(self.attn(h))).sum(-1)              # (N, 2)


def test_a_softmax_over_attention_weights_is_not_taken_for_the_output():
    """The optimizer warned "ends in Softmax" whenever a Softmax module ran last, even when the
    forward went on to pool values with it (review r2): the output's graph decides now; a model
    that does end in a Sigmoid module still gets the warning with its path."""
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (8, 30)), 4).permute(0, 2, 1).float()
    m = _AttentionPool().eval()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        LayerFeatureOptimizer(m, m.conv).attribute(x, target=[0], n_starts=2, l2=1.0, seed=0)
    assert not [str(a.message) for a in w if "Softmax" in str(a.message)]
    squashed = torch.nn.Sequential(torch.nn.Conv1d(4, 3, 5), torch.nn.Flatten(),
                                   torch.nn.Linear(3 * 26, 2), torch.nn.Sigmoid()).eval()
    with pytest.warns(UserWarning, match=r"ends in Sigmoid \(3\)"):
        LayerFeatureOptimizer(squashed, squashed[0]).attribute(x, target=[0], n_starts=2, l2=1.0,
                                                                seed=0)
