package main

import (
	"strings"
	"testing"
)

// TestX_ErrorsDoNotEchoPassword: a mistyped -X property name (sasl.pasword)
// is rejected without printing the value after "=", which is likely the
// password (the flag package prints "invalid value ..." with the whole
// argument when the -X function returns an error).
func TestX_ErrorsDoNotEchoPassword(t *testing.T) {
	const secret = "s3cr3t-value"
	for _, args := range [][]string{
		{"produce", "-b", "127.0.0.1:1", "-t", "x", "-X", "sasl.pasword=" + secret},
		{"produce", "-b", "127.0.0.1:1", "-t", "x", "-X", "security.protocol=SASL_SSL", "-X", "sasl.passwd=" + secret},
		{"bench", "-b", "127.0.0.1:1", "-X", "sasl.pasword=" + secret},
	} {
		code, out, errOut := runCmd(t, args...)
		if code != 2 {
			t.Errorf("%q: exit %d, want 2 (usage error)", args, code)
		}
		if !strings.Contains(errOut, "sasl.pas") {
			t.Errorf("%q: the error does not name the property:\n%s", args, errOut)
		}
		if strings.Contains(out+errOut, secret) {
			t.Errorf("%q: the output shows the password:\n%s", args, errOut)
		}
	}
}

// An -X argument without "=" (a mistyped "sasl.password:secret") is named by
// its position, never echoed, by every subcommand that takes -X.
func TestX_ArgumentWithoutEqualsIsNotEchoed(t *testing.T) {
	const secret = "s3cr3t-value"
	for _, args := range [][]string{
		{"produce", "-b", "127.0.0.1:1", "-t", "x", "-X", "sasl.password:" + secret},
		{"bench", "-b", "127.0.0.1:1", "-X", "sasl.password:" + secret},
	} {
		code, out, errOut := runCmd(t, args...)
		if code != 2 || !strings.Contains(errOut, "-X argument 1 is not prop=value") {
			t.Errorf("%q: exit %d, want 2 and the position named:\n%s", args, code, errOut)
		}
		if strings.Contains(out+errOut, secret) {
			t.Errorf("%q: the output shows the password:\n%s", args, errOut)
		}
	}
}
