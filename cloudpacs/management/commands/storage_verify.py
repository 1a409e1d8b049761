"""`manage.py storage_verify`: read every file the index points at from the configured
backend, as a stream, and compare its dataset's SHA-256 and its size with the index.
Lists each missing or damaged file and exits 1 if there is any. Resumable like
storage_copy. `--orphans` also lists stored files the index does not know (older than
`--older-than` hours), and `--remove-orphans` removes them: what a PUT that timed out
after the store took it, or a node lost with its spool, leaves behind."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from cloudpacs import services, storage
from cloudpacs.management.progress import Checkpoint, ProgressBar


class Command(BaseCommand):
    help = "Hash every stored file against the index (resumable); optionally sweep unindexed files."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--restart", action="store_true", help="ignore the checkpoint of an earlier run")
        parser.add_argument("--quiet", action="store_true", help="no progress bar")
        parser.add_argument("--orphans", action="store_true", help="also list stored files the index does not know")
        parser.add_argument("--remove-orphans", action="store_true", help="and remove them")
        parser.add_argument(
            "--older-than", type=float, default=24.0, help="hours an unindexed file must be old to count (24)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        checkpoint = Checkpoint(f"storage_verify-{storage.backend_name()}")
        state = {} if options["restart"] else checkpoint.load()
        after = str(state.get("last", ""))
        counts: dict[str, int] = {"verified": 0, "missing": 0, "damaged": 0, **state.get("counts", {})}
        total = services.indexed_file_count()
        bar = None if options["quiet"] else ProgressBar(self.stderr, total, sum(counts.values()))
        if after:
            self.stdout.write(f"resuming after {after}")
        try:
            for key, sha256, size in services.indexed_files(after):
                try:
                    found_sha256, found_size = storage.dataset_sha256(key)
                except FileNotFoundError:
                    counts["missing"] += 1
                    self.stdout.write(f"missing {key}")
                else:
                    if found_sha256 != sha256 or (size and found_size != size):
                        counts["damaged"] += 1
                        self.stdout.write(f"damaged {key}")
                    else:
                        counts["verified"] += 1
                after = key
                checkpoint.save({"last": after, "counts": counts})
                if bar is not None:
                    bar.advance(size)
        except (storage.StoreUnavailable, OSError, KeyboardInterrupt) as exc:
            checkpoint.save({"last": after, "counts": counts}, now=True)
            raise CommandError(f"stopped after {after or 'the start'} ({exc}); run again to resume") from exc
        finally:
            if bar is not None:
                bar.close()
        checkpoint.clear()
        self.stdout.write(f"{counts['verified']} verified, {counts['missing']} missing, {counts['damaged']} damaged")
        if options["orphans"] or options["remove_orphans"]:
            orphans = storage.sweep_unindexed(
                services.indexed_keys, options["older_than"] * 3600, remove=options["remove_orphans"]
            )
            for key in orphans:
                self.stdout.write(f"{'removed' if options['remove_orphans'] else 'unindexed'} {key}")
            self.stdout.write(f"{len(orphans)} unindexed")
        if counts["missing"] or counts["damaged"]:
            raise CommandError(f"{counts['missing']} missing and {counts['damaged']} damaged files")
