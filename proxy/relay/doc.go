// Package relay splices a logged-in session between its client and its backend, for the
// front ends that step aside once the backend login is done (IMAP, POP3, ManageSieve).
// Each direction copies bytes, starting with those the front end's bufio.Reader already
// holds, through pooled buffers taken only while there are bytes to move; a direction
// quiet for a few seconds waits in one shared epoll set (Linux) rather than on a goroutine
// of its own; when one side ends, the other is half-closed (CloseWrite) and both close
// after a grace period. The front end's Framer follows the server's responses, so that a
// drain's goodbye, or the line telling the client its backend is lost, lands between two
// responses rather than inside one.
package relay
