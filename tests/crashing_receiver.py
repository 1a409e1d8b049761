"""`manage.py dicomnode` with a power cut between the index and the file: run as
`python -m tests.crashing_receiver MODE N RECORD <manage.py arguments>` by tests/test_faults.py.

The Nth instance whose index row commits before its file's fsync has returned (an instance
of a series the index holds, cloudpacs.services._insert_autocommit with `unsynced`) has its
file emptied (MODE `truncated`, what ext4 leaves of a file whose data never reached the
disk) or its name removed (`missing`, a directory entry never synced) right after the
commit, its SOP Instance UID written to the file RECORD, and the process killed with
SIGKILL: no answer is sent for it."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any


def main() -> None:
    mode, nth, record = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudpacs.settings")
    import django

    django.setup()
    from cloudpacs import services, storage

    committed = services._insert_autocommit
    count = 0

    def crash_after_the_commit(row: dict[str, Any], *args: Any, unsynced: bool = False, **kwargs: Any) -> Any:
        nonlocal count
        pk, known = committed(row, *args, unsynced=unsynced, **kwargs)
        if unsynced and pk is not None:
            count += 1
            if count == nth:
                path = storage.path_for(row["storage_key"])
                if mode == "truncated":
                    os.truncate(path, 0)
                else:
                    path.unlink()
                record.write_text(row["sop_instance_uid"])
                os.kill(os.getpid(), signal.SIGKILL)
        return pk, known

    services._insert_autocommit = crash_after_the_commit  # type: ignore[assignment]
    from django.core.management import execute_from_command_line

    execute_from_command_line(["manage.py", *sys.argv[4:]])


if __name__ == "__main__":
    main()
