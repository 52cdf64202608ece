"""io: the one JSONL reader names file and line; the run-folder lock is exclusive between processes and
re-entrant within one, from any thread."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from toolcall_kit import io as kit_io
from toolcall_kit.errors import DataError, KitError


def test_read_jsonl_names_file_and_line(tmp_path):
    f = tmp_path / "rows.jsonl"
    f.write_text('{"a": 1}\n\n{"a": 2}\n{broken\n')
    with pytest.raises(DataError, match=r"rows.jsonl:4: invalid JSON"):
        kit_io.read_jsonl(f)
    f.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert kit_io.read_jsonl(f) == [{"a": 1}, {"a": 2}]


HOLD = """
import sys, time
from toolcall_kit import io
with io.folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_folder_lock_is_exclusive_between_processes_and_reentrant_within_one(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        with pytest.raises(KitError, match="in use by another toolcall-kit process"):
            with kit_io.folder_lock(tmp_path):
                pass
    finally:
        other.kill()
        other.wait()
    # the OS released the dead process's lock: nothing stale is left behind
    with kit_io.folder_lock(tmp_path), kit_io.folder_lock(tmp_path):
        errors = []

        def again():
            try:
                with kit_io.folder_lock(tmp_path):
                    pass
            except KitError as e:
                errors.append(e)

        thread = threading.Thread(target=again)
        thread.start()
        thread.join()
        assert errors == []
