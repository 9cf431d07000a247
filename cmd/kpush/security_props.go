package main

// The security -X properties (librdkafka and kcat names) shared by
// "kpush produce" and "kpush bench", and the kpush options they become.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/kpush/kpush"
)

// passwordEnv is read for the SASL password when no -X sasl.password or
// -X sasl.password.file is given, so it need not be on the command line.
const passwordEnv = "KPUSH_SASL_PASSWORD"

// securityPropNames lists the security -X properties, for error messages.
const securityPropNames = "security.protocol, sasl.mechanism, sasl.username, sasl.password, sasl.password.file, " +
	"sasl.oauthbearer.token.file, ssl.ca.location, ssl.certificate.location, ssl.key.location"

// securityHelp documents the properties in the commands' usage text.
const securityHelp = `  security.protocol       PLAINTEXT, SSL, SASL_PLAINTEXT or
                          SASL_SSL                              default PLAINTEXT
  sasl.mechanism          PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or
                          OAUTHBEARER (alias sasl.mechanisms)
  sasl.username           SASL user name
  sasl.password           SASL password; better: sasl.password.file
                          or the KPUSH_SASL_PASSWORD environment
                          variable, which keep it out of ps output
  sasl.password.file      file whose first line is the password
  sasl.oauthbearer.token.file
                          OAUTHBEARER: file holding the token, read
                          again at every (re-)authentication
  ssl.ca.location         PEM file of the CA(s) to trust        default system roots
  ssl.certificate.location, ssl.key.location
                          PEM client certificate and key (mutual TLS)
`

// securityProps are the security -X properties as given.
type securityProps struct {
	protocol     string
	mechanism    string
	username     string
	password     string
	passwordFile string
	tokenFile    string
	caFile       string
	certFile     string
	keyFile      string
}

// set applies one property; known is false for a name it does not own.
// Errors never repeat a password.
func (sp *securityProps) set(name, value string) (known bool, err error) {
	switch name {
	case "security.protocol":
		v := strings.ToUpper(value)
		switch v {
		case "PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL":
			sp.protocol = v
		default:
			return true, fmt.Errorf("-X security.protocol=%s: not PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL", value)
		}
	case "sasl.mechanism", "sasl.mechanisms":
		v := strings.ToUpper(value)
		switch v {
		case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER":
			sp.mechanism = v
		default:
			return true, fmt.Errorf("-X %s=%s: not PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER", name, value)
		}
	case "sasl.username":
		sp.username = value
	case "sasl.password":
		sp.password = value
	case "sasl.password.file":
		sp.passwordFile = value
	case "sasl.oauthbearer.token.file":
		sp.tokenFile = value
	case "ssl.ca.location":
		sp.caFile = value
	case "ssl.certificate.location":
		sp.certFile = value
	case "ssl.key.location":
		sp.keyFile = value
	default:
		return false, nil
	}
	return true, nil
}

// options checks the combination and returns the kpush options: TLS for
// SSL and SASL_SSL, SASL for SASL_*. Files are read here (the token file
// again at each authentication).
func (sp *securityProps) options() ([]kpush.Option, error) {
	proto := sp.protocol
	if proto == "" {
		proto = "PLAINTEXT"
	}
	useTLS := proto == "SSL" || proto == "SASL_SSL"
	useSASL := strings.HasPrefix(proto, "SASL_")
	switch {
	case !useSASL && (sp.mechanism != "" || sp.username != "" || sp.password != "" || sp.passwordFile != "" || sp.tokenFile != ""):
		return nil, fmt.Errorf("-X sasl.* given but security.protocol is %s: use -X security.protocol=SASL_SSL (or SASL_PLAINTEXT)", proto)
	case !useTLS && (sp.caFile != "" || sp.certFile != "" || sp.keyFile != ""):
		return nil, fmt.Errorf("-X ssl.* given but security.protocol is %s: use -X security.protocol=SSL (or SASL_SSL)", proto)
	}
	var opts []kpush.Option
	if useTLS {
		cfg, err := kpush.TLSConfigFromFiles(sp.caFile, sp.certFile, sp.keyFile)
		if err != nil {
			return nil, fmt.Errorf("-X ssl.*: %v", strings.TrimPrefix(err.Error(), "kpush: "))
		}
		opts = append(opts, kpush.WithTLS(cfg))
	}
	if useSASL {
		m, err := sp.mechanismOption()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kpush.WithSASL(m))
	}
	return opts, nil
}

func (sp *securityProps) mechanismOption() (kpush.SASLMechanism, error) {
	switch sp.mechanism {
	case "":
		return nil, errors.New("-X security.protocol=" + sp.protocol + " needs -X sasl.mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER)")
	case "OAUTHBEARER":
		if sp.tokenFile == "" {
			return nil, errors.New("-X sasl.mechanism=OAUTHBEARER needs -X sasl.oauthbearer.token.file")
		}
		file := sp.tokenFile
		return kpush.SASLOAuthBearer(func(context.Context) (string, error) {
			b, err := os.ReadFile(file)
			if err != nil {
				return "", fmt.Errorf("token file: %w", err)
			}
			return strings.TrimSpace(string(b)), nil
		}), nil
	}
	if sp.username == "" {
		return nil, fmt.Errorf("-X sasl.mechanism=%s needs -X sasl.username", sp.mechanism)
	}
	pass, err := sp.resolvePassword()
	if err != nil {
		return nil, err
	}
	switch sp.mechanism {
	case "PLAIN":
		return kpush.SASLPlain(sp.username, pass), nil
	case "SCRAM-SHA-256":
		return kpush.SASLScramSHA256(sp.username, pass), nil
	default:
		return kpush.SASLScramSHA512(sp.username, pass), nil
	}
}

// resolvePassword takes the password from -X sasl.password, else the
// first line of -X sasl.password.file, else $KPUSH_SASL_PASSWORD.
func (sp *securityProps) resolvePassword() (string, error) {
	switch {
	case sp.password != "" && sp.passwordFile != "":
		return "", errors.New("-X sasl.password and -X sasl.password.file both given; use one")
	case sp.password != "":
		return sp.password, nil
	case sp.passwordFile != "":
		b, err := os.ReadFile(sp.passwordFile)
		if err != nil {
			return "", fmt.Errorf("-X sasl.password.file: %v", err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		if line = strings.TrimRight(line, "\r"); line == "" {
			return "", fmt.Errorf("-X sasl.password.file: %s: first line is empty", sp.passwordFile)
		}
		return line, nil
	}
	if p := os.Getenv(passwordEnv); p != "" {
		return p, nil
	}
	return "", fmt.Errorf("no SASL password: give -X sasl.password.file=FILE, set $%s, or -X sasl.password=...", passwordEnv)
}
