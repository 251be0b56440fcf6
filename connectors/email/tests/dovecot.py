"""A throwaway Dovecot: its own config in a temporary folder, a free port, one passwd-file user
and a maildir. Dovecot 2.3 runs so as root with `first_valid_uid`, a non-root mail uid and
`chroot =` on the login and anvil services."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USER = "imap@shop.example"
PASSWORD = "imap-test-secret"


def available() -> bool:
    return os.path.exists(DOVECOT) and os.geteuid() == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Dovecot:
    root: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    capability: str | None = None  # e.g. without IDLE
    # XOAUTH2 and OAUTHBEARER through Dovecot's oauth2 passdb, asking this URL about each token
    # (RFC 7662 introspection, `introspection_mode = post`); passwords keep working beside it.
    introspection_url: str | None = None

    @classmethod
    def create(cls, root: Path | None = None, port: int | None = None,
               capability: str | None = None, introspection_url: str | None = None) -> Dovecot:
        folder = root or Path(tempfile.mkdtemp(prefix="intake-dovecot-"))
        return cls(folder, port or free_port(), capability=capability,
                   introspection_url=introspection_url)

    @property
    def maildir(self) -> Path:
        return self.root / "mail"

    def write_config(self) -> Path:
        mail_user = pwd.getpwnam("dovenull")
        self.root.chmod(0o755)
        self.maildir.mkdir(parents=True, exist_ok=True)
        (self.root / "run").mkdir(exist_ok=True)
        os.chown(self.maildir, mail_user.pw_uid, mail_user.pw_gid)
        for path in self.maildir.rglob("*"):
            os.chown(path, mail_user.pw_uid, mail_user.pw_gid)
        (self.root / "passwd").write_text(
            f"{USER}:{{PLAIN}}{PASSWORD}:{mail_user.pw_uid}:{mail_user.pw_gid}::"
            f"{self.maildir}::\n")
        capability = (f"imap_capability = {self.capability}\n" if self.capability else "")
        mechanisms, oauth_passdb = "plain login", ""
        if self.introspection_url:
            mechanisms = "plain login xoauth2 oauthbearer"
            (self.root / "oauth2.conf").write_text(
                f"introspection_mode = post\nintrospection_url = {self.introspection_url}\n"
                "username_attribute = email\nactive_attribute = active\nactive_value = true\n")
            oauth_passdb = (f"passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
                            f"  args = {self.root}/oauth2.conf\n}}\n")
        config = f"""
base_dir = {self.root}/run
state_dir = {self.root}/run
log_path = {self.root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
first_valid_uid = {mail_user.pw_uid}
mail_location = maildir:{self.maildir}
mail_uid = {mail_user.pw_uid}
mail_gid = {mail_user.pw_gid}
default_login_user = dovenull
default_internal_user = dovenull
default_internal_group = dovenull
{capability}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  chroot =
}}
service anvil {{
  chroot =
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = {self.root}/passwd
}}
{oauth_passdb}userdb {{
  driver = passwd-file
  args = {self.root}/passwd
}}
"""
        path = self.root / "dovecot.conf"
        path.write_text(config)
        return path

    def start(self) -> Dovecot:
        config = self.write_config()
        self.process = subprocess.Popen([DOVECOT, "-F", "-c", str(config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.recv(100).startswith(b"* OK"):
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"dovecot did not start: {self.log()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def append(self, raw: bytes, folder: str = "INBOX") -> None:
        """A mail into the mailbox, through IMAP as any client would."""
        import imapclient
        with imapclient.IMAPClient("127.0.0.1", self.port, ssl=False, timeout=10) as client:
            client.login(USER, PASSWORD)
            client.append(folder, raw)

    def forget_uids(self) -> None:
        """Delete Dovecot's index and uidlist: the folder gets a new UIDVALIDITY."""
        for name in ("dovecot-uidlist", "dovecot.index", "dovecot.index.log",
                     "dovecot.index.cache", "dovecot-uidvalidity"):
            for path in self.maildir.rglob(name):
                path.unlink()
        for path in self.maildir.glob("dovecot-uidvalidity*"):
            path.unlink()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
