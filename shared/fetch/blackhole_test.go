//go:build unix

package fetch

import (
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/fetch/fetchtest"
)

// TestHappyEyeballs: a name whose first address silently drops packets is
// still fetched from its second address, after FallbackDelay rather than the
// connect timeout. The connect timeout is a minute: the first attempt
// cannot fail before it, and no address is tried after it, so the fetch
// succeeds only if the second address was tried while the first still
// hung.
func TestHappyEyeballs(t *testing.T) {
	ln := listen(t, "127.0.0.1:0")
	port := fetchtest.BlackholePort(t, ln, "127.0.0.2")
	serveHTTP(t, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "from 127.0.0.1")
	}))
	c := newTestClient(t, Config{
		AllowedPrivate: []netip.Prefix{loopback},
		ConnectTimeout: time.Minute,
		Timeout:        2 * time.Minute,
		Resolver:       staticResolver(map[string][]string{"dual.test": {"127.0.0.2", "127.0.0.1"}}),
	})
	start := time.Now()
	data, _, err := c.Fetch(t.Context(), "http://dual.test:"+port+"/")
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("Fetch after %v: %v", elapsed, err)
	}
	if string(data) != "from 127.0.0.1" {
		t.Errorf("body = %q", data)
	}
	// Not either: half the connect timeout for each address, as net's
	// own dialer shares it out.
	if elapsed >= 30*time.Second {
		t.Errorf("took %v, want the fallback after 300 ms, not a share of the 1 min connect timeout", elapsed)
	}
	t.Logf("fetched through the second address after %v", elapsed.Round(time.Millisecond))
}

// TestAllBlackholed: when every address drops packets the fetch ends at the
// connect deadline with a 504, having tried each address: never before
// the deadline, and long before the fetch's own timeout.
func TestAllBlackholed(t *testing.T) {
	port := fetchtest.BlackholePort(t, nil, "127.0.0.2", "127.0.0.3")
	const connect = time.Second
	c := newTestClient(t, Config{
		AllowedPrivate: []netip.Prefix{loopback},
		ConnectTimeout: connect,
		Timeout:        time.Minute,
		Resolver: staticResolver(map[string][]string{
			"dead.test":  {"127.0.0.2", "127.0.0.3"},
			"mixed.test": {"127.0.0.2", "127.0.0.1"}, // nothing listens on 127.0.0.1:port
		}),
	})
	for _, name := range []string{"dead.test", "mixed.test"} {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			_, err := c.Get(t.Context(), "http://"+name+":"+port+"/")
			elapsed := time.Since(start)
			checkErr(t, err, http.StatusGatewayTimeout, ErrTimeout)
			if elapsed < connect-50*time.Millisecond || elapsed >= 30*time.Second {
				t.Errorf("took %v, want the connect timeout %v (not the fetch's 1 min)", elapsed, connect)
			}
			if msg := err.Error(); !strings.Contains(msg, "127.0.0.2:"+port) ||
				!strings.Contains(msg, ":"+port) || !strings.Contains(msg, "2 connection attempts") {
				t.Errorf("error %q does not report both attempts", msg)
			}
		})
	}
}
