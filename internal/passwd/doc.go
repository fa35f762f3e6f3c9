// Package passwd turns backend secrets into password-database entries a mail server verifies,
// so the backend can be provisioned from the same key saslgate derives secrets with without
// storing the secrets themselves: Dovecot passwd-file lines (user:{SCHEME}hash, Dovecot's
// password schemes) with SHA512-CRYPT (Drepper's "Unix crypt using SHA-256 and SHA-512",
// the $6$ crypt(3) format glibc, OpenSSL and Dovecot verify) or SSHA512 (salted SHA-512).
package passwd
