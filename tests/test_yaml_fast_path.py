"""findings._fast_load (libyaml) reads study files exactly as the pure-Python _StudyLoader does:
the same values for every shipped file and for generated documents, and the pure-Python
loader (with its exact problem lines) wherever libyaml fails or an alias appears."""

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from metaalliance.dataset import findings as F

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not hasattr(yaml, "CSafeLoader"), reason="PyYAML without libyaml")


def slow(text):
    return yaml.load(text, Loader=F._StudyLoader)  # noqa: S506


@pytest.mark.parametrize("path", sorted((ROOT / "data" / "findings").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_files_load_the_same(path):
    text = path.read_text(encoding="utf-8")
    fast = F._fast_load(text)
    assert fast is not F._FALLBACK and fast == slow(text)


@pytest.mark.parametrize("text", [
    "a: &x 1\nb: *x\n",                       # alias: refused by the pure-Python loader
    "a: [1, 2\n",                             # syntax error: the pure-Python wording
    "a: 1\n\tb: 2\n",                          # tab indentation
    "- !!python/object:os.system x\n",        # unsafe tag
])
def test_problems_go_through_the_pure_python_loader(text):
    assert F._fast_load(text) is F._FALLBACK
    assert F.parse_study_text(text, "x.yaml")[1] == _slow_problems(text)


def _slow_problems(text):
    try:
        slow(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return [f"x.yaml: cannot parse YAML{where}: {problem}"]
    return []


scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=12), st.dates())
docs = st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=4),
                                                 st.dictionaries(st.text(min_size=1, max_size=8),
                                                                 c, max_size=4)), max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(docs, st.sampled_from([None, False, True]))
def test_generated_documents_load_the_same(doc, flow):
    text = yaml.safe_dump({"study": doc}, default_flow_style=flow, allow_unicode=True)
    fast = F._fast_load(text)
    assert fast is not F._FALLBACK and fast == slow(text)
