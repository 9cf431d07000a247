package wire_test

import (
	"context"
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kpush/kpush/internal/wire"
)

// frameLog is a net.Conn that records the version of every ApiVersions
// request frame written.
type frameLog struct {
	net.Conn
	mu       sync.Mutex
	versions []int16 // ApiVersions request versions, in write order
}

func (f *frameLog) Write(b []byte) (int, error) {
	if len(b) >= 8 && int16(binary.BigEndian.Uint16(b[4:6])) == int16(kmsg.ApiVersions) {
		f.mu.Lock()
		f.versions = append(f.versions, int16(binary.BigEndian.Uint16(b[6:8])))
		f.mu.Unlock()
	}
	return f.Conn.Write(b)
}

func (f *frameLog) apiVersions() []int16 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int16(nil), f.versions...)
}

// TestDial_OldBrokerApiVersionsFallback: a broker that does not know
// ApiVersions v3 (Kafka < 2.4) answers with a v0-format body carrying
// UNSUPPORTED_VERSION and its own ApiVersions range (KIP-511). Dial must
// read the error code from that body, retry at the broker's highest
// version, and end up with a working connection. The wire log shows the
// request versions the client wrote: v3, then the broker's v2.
func TestDial_OldBrokerApiVersionsFallback(t *testing.T) {
	cl, addr := newCluster(t)
	var v0Answers atomic.Int32
	cl.ControlKey(int16(kmsg.ApiVersions), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cl.KeepControl()
		if req.GetVersion() <= 2 {
			return nil, nil, false // served by kfake, as by an old broker
		}
		v0Answers.Add(1)
		resp := req.ResponseKind().(*kmsg.ApiVersionsResponse)
		resp.SetVersion(0) // kfake writes the body at the response's version
		resp.ErrorCode = kerr.UnsupportedVersion.Code
		k := kmsg.NewApiVersionsResponseApiKey()
		k.ApiKey = int16(kmsg.ApiVersions)
		k.MaxVersion = 2
		resp.ApiKeys = append(resp.ApiKeys, k)
		return resp, nil, true
	})
	var fl *frameLog
	c := dial(t, addr, &wire.Config{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		fl = &frameLog{Conn: nc}
		return fl, nil
	}})
	if got := fl.apiVersions(); len(got) != 2 || got[0] != 3 || got[1] != 2 {
		t.Errorf("ApiVersions request versions on the wire = %v, want [3 2]", got)
	}
	if v0Answers.Load() != 1 {
		t.Errorf("broker gave %d v0-format answers, want 1", v0Answers.Load())
	}
	if v := c.Version(int16(kmsg.Produce)); v <= 0 {
		t.Errorf("Version(Produce) = %d after the fallback, want > 0", v)
	}
	if _, err := c.Request(context.Background(), metadataReq("t")); err != nil {
		t.Fatalf("metadata after the fallback: %v", err)
	}
}
