// Package tlsgen makes throwaway TLS certificates: a self-signed CA, a
// server certificate for local hosts and a client certificate, for tests,
// the kafkatest fake cluster and "kpush dev --tls". Never for production.
package tlsgen

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Bundle is a CA and the certificates it signed. Immutable.
type Bundle struct {
	CAPEM         []byte // the CA certificate
	ServerCertPEM []byte // server certificate for the hosts given to New
	ServerKeyPEM  []byte // its private key (PKCS #8)
	ClientCertPEM []byte // client certificate (CN "kpush-client") for mutual TLS
	ClientKeyPEM  []byte
	ServerName    string // the first host given to New: what ClientConfig verifies

	pool   *x509.CertPool
	server tls.Certificate
	client tls.Certificate
}

// New makes a CA and certificates valid for a year. The server certificate
// names hosts (IP addresses or DNS names); default 127.0.0.1, ::1 and
// localhost.
func New(hosts ...string) (*Bundle, error) {
	if len(hosts) == 0 {
		hosts = []string{"127.0.0.1", "::1", "localhost"}
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "kpush throwaway CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(1, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	b := &Bundle{CAPEM: encode("CERTIFICATE", caDER), ServerName: hosts[0], pool: x509.NewCertPool()}
	b.pool.AddCert(ca)

	leaf := func(cn string, usage x509.ExtKeyUsage, hosts []string) (certPEM, keyPEM []byte, err error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: serial(),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.AddDate(1, 0, 0),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		}
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return nil, nil, err
		}
		pk, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, nil, err
		}
		return encode("CERTIFICATE", der), encode("PRIVATE KEY", pk), nil
	}
	if b.ServerCertPEM, b.ServerKeyPEM, err = leaf(hosts[0], x509.ExtKeyUsageServerAuth, hosts); err != nil {
		return nil, err
	}
	if b.ClientCertPEM, b.ClientKeyPEM, err = leaf("kpush-client", x509.ExtKeyUsageClientAuth, nil); err != nil {
		return nil, err
	}
	if b.server, err = tls.X509KeyPair(b.ServerCertPEM, b.ServerKeyPEM); err != nil {
		return nil, err
	}
	if b.client, err = tls.X509KeyPair(b.ClientCertPEM, b.ClientKeyPEM); err != nil {
		return nil, err
	}
	return b, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}

func encode(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// ServerConfig returns a server configuration presenting the server
// certificate, TLS 1.2 or later. With requireClientCert, clients must
// present a certificate signed by the CA.
func (b *Bundle) ServerConfig(requireClientCert bool) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{b.server}}
	if requireClientCert {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = b.pool
	}
	return cfg
}

// ClientConfig returns a client configuration that trusts the CA and
// verifies the server's certificate against ServerName (so it also works
// for a server certificate whose names do not include the address dialed);
// with withCert it also presents the client certificate.
func (b *Bundle) ClientConfig(withCert bool) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: b.pool, ServerName: b.ServerName}
	if withCert {
		cfg.Certificates = []tls.Certificate{b.client}
	}
	return cfg
}

// Files are the paths WriteFiles wrote.
type Files struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
}

// WriteFiles writes the bundle as PEM files into dir (keys readable by the
// owner only).
func (b *Bundle) WriteFiles(dir string) (Files, error) {
	f := Files{
		CA:         filepath.Join(dir, "ca.pem"),
		ServerCert: filepath.Join(dir, "server.pem"),
		ServerKey:  filepath.Join(dir, "server-key.pem"),
		ClientCert: filepath.Join(dir, "client.pem"),
		ClientKey:  filepath.Join(dir, "client-key.pem"),
	}
	for _, w := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{f.CA, b.CAPEM, 0o644}, {f.ServerCert, b.ServerCertPEM, 0o644}, {f.ServerKey, b.ServerKeyPEM, 0o600},
		{f.ClientCert, b.ClientCertPEM, 0o644}, {f.ClientKey, b.ClientKeyPEM, 0o600},
	} {
		if err := os.WriteFile(w.path, w.data, w.mode); err != nil {
			return Files{}, fmt.Errorf("tlsgen: %w", err)
		}
	}
	return f, nil
}
