#!/bin/sh
# curl with an OAuth token: curl sends OAUTHBEARER when the server offers it.
TOKEN=$(saslgate login --token-file ~/.config/saslgate/alice.json --non-interactive) || exit 1

# List mailboxes (IMAPS), read the first message of INBOX.
curl --user alice@example.com: --oauth2-bearer "$TOKEN" imaps://mail.example.com/
curl --user alice@example.com: --oauth2-bearer "$TOKEN" 'imaps://mail.example.com/INBOX;UID=1'

# Send a message (submission with STARTTLS).
printf 'From: alice@example.com\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\nhello\r\n' |
  curl --ssl-reqd --user alice@example.com: --oauth2-bearer "$TOKEN" \
    --mail-from alice@example.com --mail-rcpt bob@example.com --upload-file - \
    smtp://mail.example.com:587
