package fetch

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestDialOrder(t *testing.T) {
	addrs := func(ss ...string) []netip.Addr {
		var out []netip.Addr
		for _, s := range ss {
			out = append(out, netip.MustParseAddr(s))
		}
		return out
	}
	tests := []struct{ in, want []netip.Addr }{
		{nil, nil},
		{addrs("2001:db8::1"), addrs("2001:db8::1")},
		{
			addrs("2001:db8::1", "2001:db8::2", "192.0.2.1", "192.0.2.2"),
			addrs("2001:db8::1", "192.0.2.1", "2001:db8::2", "192.0.2.2"),
		},
		{
			addrs("192.0.2.1", "2001:db8::1", "2001:db8::2", "2001:db8::3", "192.0.2.2"),
			addrs("192.0.2.1", "2001:db8::1", "192.0.2.2", "2001:db8::2", "2001:db8::3"),
		},
		{ // an IPv4-mapped address is IPv4 on the wire
			addrs("::ffff:192.0.2.1", "2001:db8::1", "192.0.2.2"),
			addrs("::ffff:192.0.2.1", "2001:db8::1", "192.0.2.2"),
		},
		{
			addrs("192.0.2.1", "192.0.2.2", "192.0.2.3"),
			addrs("192.0.2.1", "192.0.2.2", "192.0.2.3"),
		},
		{ // capped at maxDialAttempts, both families kept
			addrs("192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5", "192.0.2.6",
				"192.0.2.7", "192.0.2.8", "192.0.2.9", "2001:db8::1"),
			addrs("192.0.2.1", "2001:db8::1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5",
				"192.0.2.6", "192.0.2.7"),
		},
	}
	for _, tt := range tests {
		if got := dialOrder(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("dialOrder(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// fakeAddrs returns n distinct addresses for race tests, which never dial.
func fakeAddrs(n int) []netip.AddrPort {
	out := make([]netip.AddrPort, n)
	for i := range out {
		out[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}), 80)
	}
	return out
}

// fakeDial scripts race's dial: each address hangs until cancelled, fails
// at once, or connects (to one end of a pipe) after an optional wait.
type fakeDial struct {
	mu      sync.Mutex
	started []time.Duration // per address index, when its attempt started
	t0      time.Time
	behave  map[int]func(ctx context.Context) (net.Conn, error)
}

func newFakeDial(behave map[int]func(ctx context.Context) (net.Conn, error)) *fakeDial {
	return &fakeDial{t0: time.Now(), behave: behave}
}

func (f *fakeDial) dial(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
	i := int(ap.Addr().As4()[3]) - 1
	f.mu.Lock()
	f.started = append(f.started, time.Since(f.t0))
	f.mu.Unlock()
	if b, ok := f.behave[i]; ok {
		return b(ctx)
	}
	return hang(ctx)
}

func (f *fakeDial) starts() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.started)
}

// hang is a blackholed address: no answer until the dial is given up.
func hang(ctx context.Context) (net.Conn, error) {
	<-ctx.Done()
	return nil, &net.OpError{Op: "dial", Net: "tcp", Err: ctx.Err()}
}

func refuse(context.Context) (net.Conn, error) {
	return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
}

func TestRaceStaggers(t *testing.T) {
	const delay = 100 * time.Millisecond
	winner, _ := net.Pipe()
	cancelled := make(chan int, 2)
	hangAndReport := func(i int) func(context.Context) (net.Conn, error) {
		return func(ctx context.Context) (net.Conn, error) {
			c, err := hang(ctx)
			cancelled <- i
			return c, err
		}
	}
	f := newFakeDial(map[int]func(context.Context) (net.Conn, error){
		0: hangAndReport(0),
		1: hangAndReport(1),
		2: func(context.Context) (net.Conn, error) { return winner, nil },
	})
	conn, err := race(t.Context(), fakeAddrs(4), delay, f.dial)
	if err != nil || conn != winner {
		t.Fatalf("race = %v, %v; want the third address's connection", conn, err)
	}
	starts := f.starts()
	if len(starts) != 3 {
		t.Fatalf("%d attempts started, want 3 (none after the winner)", len(starts))
	}
	// Attempts 0 and 1 hang until cancelled, so attempts 1 and 2 can only
	// have been started by the stagger: that they started at all is the
	// event. The stagger's timer never fires early, so attempt k starts no
	// sooner than k delays after race began, however late a busy machine
	// runs it (the first attempt starts at once:
	// TestRaceFailureStartsNextAtOnce).
	slices.Sort(starts)
	for k, at := range starts {
		if want := time.Duration(k) * delay; at < want {
			t.Errorf("attempt %d started %v after race began, want at least %v (starts %v)", k, at, want, starts)
		}
	}
	// The losers are cancelled once there is a winner.
	for range 2 {
		select {
		case <-cancelled:
		case <-time.After(30 * time.Second):
			t.Fatal("a losing attempt is still running 30 s after the winner")
		}
	}
}

func TestRaceFailureStartsNextAtOnce(t *testing.T) {
	winner, _ := net.Pipe()
	f := newFakeDial(map[int]func(context.Context) (net.Conn, error){
		0: refuse,
		1: refuse,
		2: func(context.Context) (net.Conn, error) { return winner, nil },
	})
	// The stagger is an hour: an attempt that waited for it (the first,
	// or one after a failure) would outlast the 30 s this race is given.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn, err := race(ctx, fakeAddrs(3), time.Hour, f.dial)
	if err != nil || conn != winner {
		t.Fatalf("race = %v, %v (starts %v): the first attempt and each after a failure must start without waiting", conn, err, f.starts())
	}
}

// TestRaceClosesLateConnection: an attempt that connects after another won
// has its connection closed, not leaked.
func TestRaceClosesLateConnection(t *testing.T) {
	release := make(chan struct{})
	lateLocal, lateRemote := net.Pipe()
	winner, _ := net.Pipe()
	f := newFakeDial(map[int]func(context.Context) (net.Conn, error){
		0: func(context.Context) (net.Conn, error) {
			<-release // connects late, ignoring cancellation
			return lateLocal, nil
		},
		1: func(context.Context) (net.Conn, error) { return winner, nil },
	})
	conn, err := race(t.Context(), fakeAddrs(2), 10*time.Millisecond, f.dial)
	if err != nil || conn != winner {
		t.Fatalf("race = %v, %v", conn, err)
	}
	close(release)
	lateRemote.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := lateRemote.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("late connection not closed: read = %v, want EOF", err)
	}
}

func TestRaceAllFail(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		f := newFakeDial(map[int]func(context.Context) (net.Conn, error){0: refuse, 1: refuse})
		_, err := race(t.Context(), fakeAddrs(2), time.Hour, f.dial)
		var ne net.Error
		if !errors.As(err, &ne) || ne.Timeout() {
			t.Errorf("error %v: want a net.Error that is not a timeout", err)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("error %v does not wrap ECONNREFUSED", err)
		}
		if got := classify(t.Context(), "fetch", err); got.Status != http.StatusBadGateway {
			t.Errorf("classified as %d, want 502", got.Status)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		// One refuses, the rest hang until the connect deadline: a timeout.
		f := newFakeDial(map[int]func(context.Context) (net.Conn, error){0: refuse})
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		_, err := race(ctx, fakeAddrs(5), 80*time.Millisecond, f.dial)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("error %v: want a timeout", err)
		}
		if got := classify(t.Context(), "fetch", err); got.Status != http.StatusGatewayTimeout || !errors.Is(got, ErrTimeout) {
			t.Errorf("classified as %v, want 504 ErrTimeout", got)
		}
		// 0 refused at once, so 1 started then; 2 and 3 followed the stagger;
		// the deadline came before 4.
		if n := len(f.starts()); n != 4 {
			t.Errorf("%d attempts started, want 4", n)
		}
		if msg := err.Error(); !strings.Contains(msg, "all 4 connection attempts failed (1 more addresses untried)") ||
			!strings.Contains(msg, "connection refused") {
			t.Errorf("error message %q", msg)
		}
	})
}
