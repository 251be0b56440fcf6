"""The email channel's declaration: the SMTP listener, its deliverer, and the sender."""

from __future__ import annotations

from intake import Channel, Command, Inbound

from .inbound import export, files, imap, smtp
from .outbound import EmailSender
from .settings import EmailAccounts, EmailSettings

CHANNEL = Channel(name="email", settings=EmailSettings, accounts=EmailAccounts,
                  inbound=Inbound(listeners=[smtp.LISTENER], tasks=[imap.TASK]),
                  sender=EmailSender, contexts=[smtp.deliverer_context],
                  commands=[
                      Command("import", "import mail from a .eml, a folder, an mbox or a blob",
                              files.run, files.arguments),
                      Command("status", "IMAP mailboxes and outbound mail, from the state store",
                              files.run_status),
                      Command("export", "a stored mail as .eml, with Return-Path and Received",
                              export.run, export.arguments),
                      Command("dovecot", "a throwaway local Dovecot with the example mailbox",
                              files.run_dovecot, files.dovecot_arguments),
                  ])
