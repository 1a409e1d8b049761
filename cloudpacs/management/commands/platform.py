"""`manage.py platform`: the whole platform in one command.

Starts the web server, the DICOM receiver and, when a broker is configured, the Celery
worker and beat, each as its own process; prints where to reach them; stops all of them
on Ctrl-C or SIGTERM. A child that dies takes the platform down with a message, rather
than leaving a half-working platform that answers the browser but loses studies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.utils.translation import gettext as _

STOP_GRACE_SECONDS = 10.0


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None


class Command(BaseCommand):
    help = "Run the web server, the DICOM receiver and the task worker together."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--web-host", default=settings.WEB_HOST)
        parser.add_argument("--web-port", type=int, default=settings.WEB_PORT)
        parser.add_argument("--dicom-host", default=settings.DICOM_HOST)
        parser.add_argument("--dicom-port", type=int, default=settings.DICOM_PORT)
        parser.add_argument("--web-workers", type=int, default=2)

    def handle(self, *args: Any, **options: Any) -> None:
        children = self._children(options)
        stopping = False

        def request_stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)

        for child in children:
            # Each child in its own process group, so Ctrl-C in the terminal reaches only
            # this command, which then stops the children in order.
            child.process = subprocess.Popen(child.argv, start_new_session=True)  # noqa: S603
        self._announce(options)

        exit_code = 0
        while not stopping:
            for child in children:
                assert child.process is not None
                code = child.process.poll()
                if code is not None:
                    self.stderr.write(
                        _("%(name)s 已退出（代码 %(code)s），正在停止平台。") % {"name": child.name, "code": code}
                    )
                    stopping = True
                    exit_code = 1
            time.sleep(0.5)

        self._stop(children)
        if exit_code:
            sys.exit(exit_code)

    def _children(self, options: dict[str, Any]) -> list[Child]:
        python = sys.executable
        manage = str(Path(settings.BASE_DIR) / "manage.py")
        web_bind = f"{options['web_host']}:{options['web_port']}"
        children = [
            Child(
                "web",
                [
                    python,
                    "-m",
                    "gunicorn",
                    "cloudpacs.wsgi:application",
                    "--bind",
                    web_bind,
                    "--workers",
                    str(options["web_workers"]),
                    "--threads",
                    "4",
                    "--access-logfile",
                    "-",
                    "--graceful-timeout",
                    "5",
                ],
            ),
            Child(
                "dicomnode",
                [python, manage, "dicomnode", "--host", options["dicom_host"], "--port", str(options["dicom_port"])],
            ),
        ]
        if settings.CELERY_BROKER_URL:
            celery = [python, "-m", "celery", "-A", "cloudpacs"]
            children.append(Child("worker", [*celery, "worker", "--loglevel", "INFO", "--concurrency", "2"]))
            schedule = Path(settings.VAR_DIR) / "celerybeat-schedule"
            children.append(Child("beat", [*celery, "beat", "--loglevel", "INFO", "--schedule", str(schedule)]))
        else:
            # No broker: beat's schedule runs in-process, the same periodic work either way.
            children.append(Child("ticker", [python, manage, "ticker"]))
        return children

    def _announce(self, options: dict[str, Any]) -> None:
        host = options["web_host"]
        shown_host = "127.0.0.1" if host in {"0.0.0.0", "::"} else host  # noqa: S104
        lines = [
            "",
            _("云影 Yunying 已启动"),
            _("  网页:      http://%(host)s:%(port)s/") % {"host": shown_host, "port": options["web_port"]},
            _("  DICOM:     AE 标题 %(aet)s，地址 %(host)s，端口 %(port)s")
            % {"aet": settings.DICOM_AE_TITLE, "host": options["dicom_host"], "port": options["dicom_port"]},
            _("  数据库:    %(engine)s") % {"engine": settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]},
            _("  任务:      %(mode)s") % {"mode": self._task_mode()},
        ]
        lines += self._demo_logins()
        lines += [_("按 Ctrl-C 停止。"), ""]
        self.stdout.write("\n".join(lines))
        self.stdout.flush()

    def _task_mode(self) -> str:
        if settings.CELERY_BROKER_URL:
            return _("Celery 工作进程（%(broker)s）") % {"broker": settings.CELERY_BROKER_URL}
        return _("进程内执行")

    def _demo_logins(self) -> list[str]:
        if not settings.DEMO_MODE:
            return []
        from facilities.demo import demo_accounts

        accounts = demo_accounts(get_user_model().objects.all())
        if not accounts:
            return [_("  （尚无演示账号：先运行 manage.py seed_hanyin）")]
        lines = [_("  演示账号（用户名 / 密码 / 角色）:")]
        lines += [f"    {a.username:<16} {a.password:<22} {a.role_label}" for a in accounts]
        return lines

    def _stop(self, children: list[Child]) -> None:
        self.stdout.write(_("正在停止……"))
        # The receiver first, so no association is cut while the web side still answers.
        order = sorted(children, key=lambda c: 0 if c.name == "dicomnode" else 1)
        for child in order:
            if child.process is not None and child.process.poll() is None:
                os.killpg(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in order:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait()
        self.stdout.write(_("已停止。"))
