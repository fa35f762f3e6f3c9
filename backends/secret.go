package backends

import (
	"fmt"
	"io"
	"log/slog"
)

const redacted = "[redacted]"

// Secret is a backend password. Every way of printing it (fmt verbs, slog, encoding/json and
// other text encoders) yields "[redacted]"; only Reveal returns the value. fmt cannot call
// methods on unexported struct fields, so a struct holding a Secret there must not be printed.
type Secret string

// Reveal returns the secret itself, for the one place that sends it to the backend.
func (s Secret) Reveal() string { return string(s) }

// String returns "[redacted]".
func (s Secret) String() string { return redacted }

// GoString returns "[redacted]", so %#v does not print the secret either.
func (s Secret) GoString() string { return redacted }

// Format writes "[redacted]" for every verb, including %d and %x, which would otherwise print
// the bytes of a string type.
func (s Secret) Format(f fmt.State, verb rune) { _, _ = io.WriteString(f, redacted) }

// LogValue returns "[redacted]" for log/slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText returns "[redacted]", so a Secret in a JSON or YAML document is not leaked.
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

var (
	_ fmt.Stringer   = Secret("")
	_ fmt.GoStringer = Secret("")
	_ fmt.Formatter  = Secret("")
	_ slog.LogValuer = Secret("")
)
