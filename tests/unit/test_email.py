"""The fast email path must give exactly EmailStr's answers: same accept/reject, same value."""

from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import EmailStr, TypeAdapter, ValidationError

from handlers.email import normalize_email

_email_str = TypeAdapter(EmailStr)

_local_chars = st.sampled_from(list("abcXYZ019.!#$%&'*+/=?^_`{|}~-\" @éß"))
_label = st.text(st.sampled_from(list("abcXYZ0129-é")), min_size=0, max_size=8) | st.sampled_from(
    ["xn--bcher-kva", "a" * 63, "a" * 64, "-a", "a-", "123", "a--b"]
)
_tld = st.sampled_from(["com", "COM", "org", "io", "test", "local", "localhost", "invalid", "onion", "arpa", "123", "c0m", "x", ""])


@st.composite
def addresses(draw):
    local = draw(st.text(_local_chars, min_size=0, max_size=70))
    labels = draw(st.lists(_label, min_size=0, max_size=4))
    domain = ".".join([*labels, draw(_tld)])
    at = draw(st.sampled_from(["@", "@", "@", "", "@@"]))
    pad = draw(st.sampled_from(["", "", " ", "\t"]))
    return f"{pad}{local}{at}{domain}{pad}"


def _reference(value: str):
    try:
        return ("ok", _email_str.validate_python(value))
    except ValidationError:
        return ("error", None)


def _fast(value: str):
    try:
        return ("ok", normalize_email(value))
    except ValueError:
        return ("error", None)


@settings(max_examples=3000)
@given(addresses())
@example("Ada.Lovelace@Example.COM")
@example("a" * 64 + "@example.com")
@example("a" * 65 + "@example.com")
@example("x@" + "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".com")
@example("u@xn--bcher-kva.example")
@example("John Doe <jd@example.com>")
def test_fast_path_agrees_with_email_str(value):
    assert _fast(value) == _reference(value)


@settings(max_examples=1000)
@given(st.text(max_size=80))
def test_fast_path_agrees_on_arbitrary_text(value):
    assert _fast(value) == _reference(value)
