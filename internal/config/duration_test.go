package config

import (
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// limits stands for a package's config struct: durations sit below other keys, so an error's
// line number is not always 1.
type limits struct {
	Name    string   `yaml:"name"`
	Timeout Duration `yaml:"timeout"`
}

func TestDurationUnmarshalYAML(t *testing.T) {
	for _, tc := range []struct {
		doc     string
		want    time.Duration
		wantErr []string // substrings of the error; nil: no error
	}{
		{"name: a\ntimeout: 30s\n", 30 * time.Second, nil},
		{"name: a\ntimeout: \"5m\"\n", 5 * time.Minute, nil},
		{"name: a\ntimeout: '1h30m'\n", 90 * time.Minute, nil},
		{"name: a\ntimeout: 1.5h\n", 90 * time.Minute, nil},
		{"name: a\ntimeout: 250ms\n", 250 * time.Millisecond, nil},
		{"name: a\ntimeout: 0s\n", 0, nil},
		{"name: a\ntimeout: -2s\n", -2 * time.Second, nil}, // parsed; Validate methods refuse it
		{"name: a\n", 0, nil},                              // absent: zero, so Or gives the default
		// Errors name the line and quote the value. A bare number has no unit: YAML hands its
		// text to the string, and time.ParseDuration refuses it.
		{"name: a\ntimeout: 30\n", 0, []string{"line 2: ", `duration "30"`}},
		{"name: a\n\ntimeout: 30 s\n", 0, []string{"line 3: ", `duration "30 s"`}},
		{"name: a\ntimeout: soon\n", 0, []string{"line 2: ", `duration "soon"`}},
		{"name: a\ntimeout: \"\"\n", 0, []string{"line 2: ", `duration ""`}},
		// Not a scalar at all.
		{"name: a\ntimeout: [30s]\n", 0, []string{`line 2: duration must be a string like "30s"`}},
		{"name: a\ntimeout:\n  seconds: 30\n", 0, []string{`line 3: duration must be a string like "30s"`}},
	} {
		var got limits
		err := yaml.Unmarshal([]byte(tc.doc), &got)
		if tc.wantErr == nil {
			if err != nil || got.Timeout.D() != tc.want {
				t.Errorf("%q: timeout %v, err %v; want %v", tc.doc, got.Timeout.D(), err, tc.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("%q: decoded %v, want an error", tc.doc, got.Timeout.D())
			continue
		}
		for _, want := range tc.wantErr {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%q: err %q, want it to contain %q", tc.doc, err, want)
			}
		}
	}
}

// A failed decode leaves the value it was decoding into as it was.
func TestDurationUnmarshalYAMLKeepsValueOnError(t *testing.T) {
	d := Duration(7 * time.Second)
	if err := yaml.Unmarshal([]byte("soon"), &d); err == nil {
		t.Fatal("decoded \"soon\"")
	}
	if d != Duration(7*time.Second) {
		t.Errorf("after a failed decode d = %v, want 7s", d.D())
	}
}

// What MarshalYAML writes, UnmarshalYAML reads back: durations are written as "30s", never
// as nanoseconds.
func TestDurationMarshalYAML(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{30 * time.Second, "name: a\ntimeout: 30s\n"},
		{90 * time.Minute, "name: a\ntimeout: 1h30m0s\n"},
		{250 * time.Millisecond, "name: a\ntimeout: 250ms\n"},
		{0, "name: a\ntimeout: 0s\n"},
	} {
		out, err := yaml.Marshal(limits{Name: "a", Timeout: Duration(tc.d)})
		if err != nil || string(out) != tc.want {
			t.Errorf("Marshal(%v) = %q, %v; want %q", tc.d, out, err, tc.want)
			continue
		}
		var back limits
		if err := yaml.Unmarshal(out, &back); err != nil || back.Timeout.D() != tc.d {
			t.Errorf("round trip of %v: %v, %v", tc.d, back.Timeout.D(), err)
		}
	}
}

func TestDurationOr(t *testing.T) {
	const def = 10 * time.Minute
	for _, tc := range []struct {
		d    Duration
		want time.Duration
	}{
		{0, def}, // unset: the default
		{Duration(time.Second), time.Second},
		{Duration(time.Nanosecond), time.Nanosecond},
		{Duration(-time.Second), -time.Second}, // only zero means unset; Validate catches negatives
	} {
		if got := tc.d.Or(def); got != tc.want {
			t.Errorf("Duration(%v).Or(%v) = %v, want %v", time.Duration(tc.d), def, got, tc.want)
		}
		if got := tc.d.D(); got != time.Duration(tc.d) {
			t.Errorf("Duration(%v).D() = %v", time.Duration(tc.d), got)
		}
	}
}
