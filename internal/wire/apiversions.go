package wire

// ApiVersions negotiation, run by Dial before the reader goroutine exists
// (so on the dialing goroutine, which owns the connection until Dial
// returns).

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// negotiate issues ApiVersions synchronously: v3 first; a broker that does
// not know that version (Kafka before 2.4) answers, as KIP-511 describes,
// with a v0-format body carrying UNSUPPORTED_VERSION and its own
// ApiVersions range, and negotiate retries once at the broker's highest
// version (v0 when it names none), as the Java client does.
func (c *Conn) negotiate(br *bufio.Reader) error {
	v := int16(3)
	for attempt := 0; ; attempt++ {
		req := kmsg.NewPtrApiVersionsRequest()
		req.SetVersion(v)
		req.ClientSoftwareName = "kpush"
		req.ClientSoftwareVersion = "0.1.0"
		c.corr++
		buf := c.fmtr.AppendRequest(nil, req, c.corr)
		if _, err := c.nc.Write(buf); err != nil {
			return err
		}
		body, err := readFrame(br, nil)
		if err != nil {
			return err
		}
		if len(body) < 4 || int32(binary.BigEndian.Uint32(body)) != c.corr {
			return errors.New("bad correlation id in ApiVersions response")
		}
		body = body[4:]
		// ApiVersions responses always use response header v0 (no tags),
		// and every version starts with the error code: read it before
		// choosing the body's format.
		if len(body) >= 2 && int16(binary.BigEndian.Uint16(body)) == kerr.UnsupportedVersion.Code {
			if attempt > 0 || v == 0 {
				return fmt.Errorf("%w: ApiVersions v%d", kerr.UnsupportedVersion, v)
			}
			old := kmsg.NewPtrApiVersionsResponse()
			old.SetVersion(0)
			if err := old.ReadFrom(body); err != nil {
				return fmt.Errorf("decode v0 ApiVersions response: %w", err)
			}
			next := int16(0)
			for _, k := range old.ApiKeys {
				if k.ApiKey == int16(kmsg.ApiVersions) {
					next = min(k.MaxVersion, v-1)
				}
			}
			v = max(next, 0)
			continue
		}
		resp := req.ResponseKind().(*kmsg.ApiVersionsResponse)
		resp.SetVersion(v)
		if err := resp.ReadFrom(body); err != nil {
			return err
		}
		if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
			return err
		}
		for _, k := range resp.ApiKeys {
			if k.ApiKey < 0 || int(k.ApiKey) >= len(c.versions) {
				continue
			}
			ours := kmsg.RequestForKey(k.ApiKey)
			if ours == nil {
				continue
			}
			maxV := ours.MaxVersion()
			if capV, ok := c.cfg.MaxVersions[k.ApiKey]; ok && capV >= 0 && capV < maxV {
				maxV = capV
			}
			if k.MaxVersion < maxV {
				maxV = k.MaxVersion
			}
			if maxV < k.MinVersion {
				continue
			}
			c.versions[k.ApiKey] = maxV
		}
		return nil
	}
}
