// Package imap is saslgate's IMAP front end: a small hand-written
// not-authenticated state (RFC 9051 §3.1, §6.1–6.2: CAPABILITY, NOOP, LOGOUT,
// STARTTLS, AUTHENTICATE with SASL-IR (RFC 4959), LOGIN, and ID (RFC 2971)) that
// accepts OAUTHBEARER (RFC 7628) and XOAUTH2, logs in to the backend as the
// token's user, then splices bytes both ways so every backend extension works.
//
// go-imap's server cannot hand its connection over, hence the hand-written
// pre-auth phase. Bytes a client pipelines behind a successful AUTHENTICATE are
// forwarded to the backend; bytes sent behind STARTTLS are discarded
// (CVE-2011-0411).
package imap
