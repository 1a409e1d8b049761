"""`manage.py storage_copy --to s3|local`: copy every file the index points at from the
other backend to this one, under the same keys, so that STORAGE_BACKEND can then be
switched with no change to the index. Resumable: a run that stops (Ctrl-C, the store
down) goes on after the last key it finished; a key already at the destination with the
same size is skipped. Run `storage_verify` on the destination before switching."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from cloudpacs import services, storage
from cloudpacs.management.progress import Checkpoint, ProgressBar


class Command(BaseCommand):
    help = "Copy the archive's files from one storage backend to the other (resumable)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--to", choices=["s3", "local"], required=True, help="the destination backend")
        parser.add_argument("--restart", action="store_true", help="ignore the checkpoint of an earlier run")
        parser.add_argument("--quiet", action="store_true", help="no progress bar")

    def handle(self, *args: Any, **options: Any) -> None:
        destination = options["to"]
        source = "local" if destination == "s3" else "s3"
        checkpoint = Checkpoint(f"storage_copy-to-{destination}")
        state = {} if options["restart"] else checkpoint.load()
        after = str(state.get("last", ""))
        counts = {"copied": 0, "present": 0, "missing": 0}
        total = services.indexed_file_count()
        bar = None if options["quiet"] else ProgressBar(self.stderr, total)
        if after:
            self.stdout.write(f"resuming after {after}")
        try:
            for key, _sha256, size in services.indexed_files(after):
                try:
                    copied = storage.copy_key(key, source, destination)
                except FileNotFoundError:
                    counts["missing"] += 1
                    self.stdout.write(f"missing at the source: {key}")
                else:
                    counts["copied" if copied else "present"] += 1
                after = key
                checkpoint.save({"last": after})
                if bar is not None:
                    bar.advance(size)
        except (storage.StoreUnavailable, OSError, KeyboardInterrupt) as exc:
            checkpoint.save({"last": after}, now=True)
            raise CommandError(f"stopped after {after or 'the start'} ({exc}); run again to resume") from exc
        finally:
            if bar is not None:
                bar.close()
        checkpoint.clear()
        self.stdout.write(
            f"{counts['copied']} copied, {counts['present']} already there, {counts['missing']} missing at the source"
        )
        if counts["missing"]:
            raise CommandError(f"{counts['missing']} indexed files are missing at the source ({source})")
