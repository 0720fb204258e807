"""The hash chain: intact logs verify; every kind of tampering is named with its line."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgwarden.chain import GENESIS, Chain, seal, seal_into, seal_record, verify
from pgwarden.cli import main
from pgwarden.testing.matrix import examples


def write_chain(path, records, prev=GENESIS):
    lines = []
    for r in records:
        line, prev = seal_record(r, prev)
        lines.append(line)
    path.write_bytes(b"".join(lines))
    return lines, prev


def records(n, start=1):
    return [{"type": "statement", "seq": i, "sql": f"select {i}", "note": "é ☃"} for i in range(start, start + n)]


def test_sealing_a_turn_into_several_chains_gives_each_the_lines_of_seal_record(tmp_path):
    # What the built-in sinks do per turn (compiled): each record serialised once, then chained
    # into every sink from that sink's own head, lines kept until the write takes them.
    first, second = Chain(), Chain("f" * 64)
    batch1, batch2 = records(3), records(2, start=4)
    seal_into(batch1, [first, second])
    seal_into(batch2, [first, second])
    for chain, start in ((first, GENESIS), (second, "f" * 64)):
        expected, head = [], start
        for r in batch1 + batch2:
            line, head = seal_record(r, head)
            expected.append(line)
        assert chain.prev == head and chain.take() == b"".join(expected)
        assert chain.lines == [] and chain.take() == b""
    (tmp_path / "r.jsonl").write_bytes(b"".join(seal_record(r, GENESIS)[0] for r in records(1)))
    assert verify([str(tmp_path / "r.jsonl")]).problem is None


def test_an_intact_chain_verifies_and_reports_its_head(tmp_path):
    f = tmp_path / "r.jsonl"
    _, head = write_chain(f, records(5))
    report = verify([str(f)], head=head)
    assert report.problem is None and report.records == 5 and report.head == head
    assert report.starts_at == GENESIS


def test_a_line_is_the_record_as_built_then_prev_then_a_hash_of_the_bytes_before_it(tmp_path):
    line, digest = seal_record({"b": 1, "a": "x"}, GENESIS)
    record = json.loads(line)
    assert list(record) == ["b", "a", "prev", "hash"]  # build order kept: nothing re-sorts it
    assert record["prev"] == GENESIS and record["hash"] == digest
    # What an auditor with nothing but sha256 does: cut the hash field off the end, hash the rest.
    cut = line.rindex(b',"hash":')
    assert hashlib.sha256(line[:cut] + b"}").hexdigest() == digest
    assert line[cut:] == b',"hash":"%s"}\n' % digest.encode()


def test_an_empty_record_still_seals_to_valid_json():
    line, digest = seal(b"{}", GENESIS)
    assert json.loads(line) == {"prev": GENESIS, "hash": digest}


def test_whitespace_added_to_a_line_is_an_edit(tmp_path):
    # A canonical re-serialisation would have forgiven this; hashing the bytes does not.
    f = tmp_path / "r.jsonl"
    lines, _ = write_chain(f, records(3))
    lines[1] = lines[1].replace(b'"seq":2', b'"seq": 2')
    f.write_bytes(b"".join(lines))
    problem = verify([str(f)]).problem
    assert problem is not None and problem.line == 2 and "edited" in problem.why


@pytest.mark.parametrize("tamper, line, why", [
    (lambda ls: ls.__setitem__(2, ls[2].replace(b"select 3", b"select 4")), 3, "edited"),
    (lambda ls: ls.pop(2), 3, "missing records"),
    (lambda ls: ls.insert(1, ls.pop(3)), 2, "reordered"),
    (lambda ls: ls.__setitem__(5, ls[5][:-20]), 6, "truncated"),  # the write cut short
    (lambda ls: ls.__setitem__(1, b"{not json\n"), 2, "not a JSON record"),
    (lambda ls: ls.__setitem__(1, json.dumps({**json.loads(ls[1]), "hash": None}).encode() + b"\n"), 2,
     "no hash"),
    (lambda ls: ls.insert(2, ls[1]), 3, "reordered"),  # a line duplicated
])
def test_every_kind_of_tampering_is_caught_at_its_line(tmp_path, tamper, line, why):
    f = tmp_path / "r.jsonl"
    lines, _ = write_chain(f, records(6))
    tamper(lines)
    f.write_bytes(b"".join(lines))
    report = verify([str(f)])
    assert report.problem is not None, "tampering not detected"
    assert report.problem.line == line and why in report.problem.why


def test_whole_lines_cut_from_the_end_are_caught_against_a_known_head(tmp_path):
    f = tmp_path / "r.jsonl"
    lines, head = write_chain(f, records(6))
    f.write_bytes(b"".join(lines[:-2]))
    assert verify([str(f)]).problem is None  # undetectable from the file alone ...
    problem = verify([str(f)], head=head).problem  # ... but not against the logged head
    assert problem is not None and "never reaches the head" in problem.why


def test_a_chain_continues_across_rotated_files_in_order(tmp_path):
    old, new = tmp_path / "r.jsonl.1", tmp_path / "r.jsonl"
    _, prev = write_chain(old, records(3))
    write_chain(new, records(3, 4), prev)
    assert verify([str(old), str(new)]).problem is None
    wrong = verify([str(new), str(old)]).problem
    assert wrong is not None and wrong.file == str(old)
    alone = verify([str(new)])  # a later file alone: intact, but it says where it starts
    assert alone.problem is None and alone.starts_at == prev


def test_a_new_chain_inside_a_file_needs_allow_restarts(tmp_path):
    f = tmp_path / "r.jsonl"
    a, _ = write_chain(tmp_path / "a", records(2))
    b, _ = write_chain(tmp_path / "b", records(2, 3))
    f.write_bytes(b"".join(a + b))
    assert "starts again" in verify([str(f)]).problem.why
    assert verify([str(f)], allow_restarts=True).problem is None


def test_verify_command_exit_codes_and_messages(tmp_path, capsys):
    f = tmp_path / "r.jsonl"
    lines, _ = write_chain(f, records(3))
    assert main(["verify", str(f)]) == 0
    assert "ok: 3 records" in capsys.readouterr().out
    lines[1] = lines[1].replace(b"select 2", b"select 9")
    f.write_bytes(b"".join(lines))
    assert main(["verify", str(f)]) == 1
    assert f"{f}:2: edited" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "missing")]) == 2


@settings(max_examples=examples(60), deadline=None)
@given(st.lists(st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k not in ("prev", "hash")),
                                st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1),
                                          st.floats(allow_nan=False), st.text()), max_size=5), min_size=1, max_size=8),
       st.data())
def test_any_records_chain_and_any_single_byte_change_is_caught(tmp_path_factory, recs, data):
    f = tmp_path_factory.mktemp("c") / "r.jsonl"
    lines, _ = write_chain(f, recs)
    assert verify([str(f)]).problem is None
    blob = bytearray(b"".join(lines))
    i = data.draw(st.integers(0, len(blob) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != blob[i]))
    blob[i] = new
    f.write_bytes(bytes(blob))
    assert verify([str(f)]).problem is not None


def test_the_example_records_in_the_docs_carry_their_own_hashes_and_field_order():
    """docs/records.md shows real lines: each must check as `verify` checks it, in builder order."""
    import re
    from pathlib import Path

    from pgwarden.chain import _claimed_hash

    docs = (Path(__file__).resolve().parents[2] / "docs" / "records.md").read_text()
    lines = [m.encode() + b"\n" for m in re.findall(r'^\{"ts":.*"hash":"[0-9a-f]{64}"\}$', docs, flags=re.M)]
    assert len(lines) >= 10
    for line in lines:
        claimed = _claimed_hash(line)
        assert claimed is not None, line
        assert hashlib.sha256(line[:line.rindex(b',"hash":"')] + b"}").hexdigest() == claimed, line
        assert list(json.loads(line))[:5] == ["ts", "type", "session", "seq", "identity"], line


# ------------------------------------------------------------------ sealing (compiled: OpenSSL's SHA-256)

def _reference_lines(bodies, prev):
    """The chain's lines as its format defines them, written here with hashlib and json."""
    out, head = [], prev
    for body in bodies:
        covered = (body[:-1] + (b"" if body == b"{}" else b",") + b'"prev":"' + head.encode() + b'"}')
        head = hashlib.sha256(covered).hexdigest()
        out.append(covered[:-1] + b',"hash":"' + head.encode() + b'"}\n')
    return out, head


def test_the_compiled_build_seals_with_openssls_own_functions():
    from pgwarden import compiled, sealing

    if os.environ.get("PGWARDEN_EXPECT_COMPILED") == "1":
        assert sealing.__file__.endswith(".so") and sealing.NATIVE, (
            "the compiled build hashes records through hashlib: OpenSSL's SHA256_* were not found")
    elif compiled.pure_requested():
        assert not sealing.NATIVE and sealing.__file__.endswith(".py")


@settings(max_examples=300)
@given(bodies=st.lists(st.one_of(st.just(b"{}"), st.binary(min_size=2, max_size=1200),
                                 st.dictionaries(st.text(max_size=8), st.text(max_size=300)).map(
                                     lambda d: json.dumps(d, ensure_ascii=False).encode())), max_size=6),
       prev=st.one_of(st.just(GENESIS), st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
                      st.text(max_size=70)))
def test_lines_for_writes_the_lines_the_format_defines(bodies, prev):
    # Whichever build runs (the compiled one builds each line in place and hashes it with
    # OpenSSL's SHA256_*), any bytes a sink is given, any head it resumes from.
    from pgwarden.sealing import lines_for

    out: list[bytes] = []
    head = lines_for(bodies, prev, out)
    expected, expected_head = _reference_lines(bodies, prev)
    assert out == expected and head == expected_head


def test_lines_for_leaves_what_it_cannot_seal_in_place_to_python():
    # Not bytes, or too short to be a JSON object: the Python loop (whatever it then makes of them).
    from pgwarden.sealing import _lines_for_python, lines_for

    for bodies in ([bytearray(b'{"a":1}')], [b"}"], [b'{"a":1}', b""]):
        out, expected = [], []
        try:
            head = lines_for(bodies, GENESIS, out)
        except Exception as e:  # noqa: BLE001
            with pytest.raises(type(e)):
                _lines_for_python(bodies, GENESIS, expected)
        else:
            assert (head, out) == (_lines_for_python(bodies, GENESIS, expected), expected)
