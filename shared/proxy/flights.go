package proxy

import (
	"context"
	"sync"
)

// flights runs the work for one key once for all identical requests in
// flight, like singleflight, with two differences the proxy needs:
//   - the work stops when every request waiting for it has gone (its
//     context is cancelled), so abandoned misses do not go on costing;
//   - the result is shared by reference and released (its memory budget
//     given back) only when the last request has written it;
//   - a result that is a download (a large body being spooled) keeps the
//     key in flight until its store copy has ended, so requests that come
//     meanwhile read the same spool instead of fetching the body again.
type flights struct {
	mu    sync.Mutex
	calls map[string]*call
}

type call struct {
	done    chan struct{}
	cancel  context.CancelFunc
	waiters int // requests waiting for the result
	refs    int // holders of the result: the work itself, then each waiter
	val     *produced
	err     error
}

// do returns fn's result for key, running fn unless a call for key is in
// flight. The work's context keeps ctx's values but not its cancellation.
// On success the caller must call release once it no longer uses the
// result.
func (f *flights) do(ctx context.Context, key string, fn func(context.Context) (*produced, error)) (val *produced, release func(), err error) {
	f.mu.Lock()
	if f.calls == nil {
		f.calls = map[string]*call{}
	}
	c := f.calls[key]
	if c != nil && c.finished() {
		if !c.val.dl.ended() {
			// A download in progress: share it.
			c.refs++
			f.mu.Unlock()
			var once sync.Once
			return c.val, func() { once.Do(func() { f.unref(c) }) }, nil
		}
		// Ended, about to leave the map: its outcome is in the store
		// (or the failure memory) by now.
		c = nil
	}
	if c == nil {
		wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		c = &call{done: make(chan struct{}), cancel: cancel, refs: 1}
		f.calls[key] = c
		go f.run(wctx, key, c, fn)
	}
	c.waiters++
	f.mu.Unlock()

	select {
	case <-c.done:
	case <-ctx.Done():
	}
	f.mu.Lock()
	select {
	case <-c.done:
		// Finished: run reserved a reference for every waiter.
		f.mu.Unlock()
		var once sync.Once
		release = func() { once.Do(func() { f.unref(c) }) }
		if c.err != nil {
			release()
			return nil, nil, c.err
		}
		return c.val, release, nil
	default:
	}
	c.waiters--
	if c.waiters == 0 {
		// Nobody wants it any more: stop the work, and let the next
		// request for the key start afresh.
		c.cancel()
		if f.calls[key] == c {
			delete(f.calls, key)
		}
	}
	f.mu.Unlock()
	return nil, nil, ctx.Err()
}

func (f *flights) run(ctx context.Context, key string, c *call, fn func(context.Context) (*produced, error)) {
	v, err := fn(ctx)
	streaming := err == nil && v.dl != nil
	f.mu.Lock()
	c.val, c.err = v, err
	c.refs += c.waiters
	if f.calls[key] == c && !streaming {
		delete(f.calls, key)
	}
	close(c.done)
	f.mu.Unlock()
	c.cancel()
	if streaming {
		// Shared, and so held, until the download has ended.
		<-v.dl.done
		f.mu.Lock()
		if f.calls[key] == c {
			delete(f.calls, key)
		}
		f.mu.Unlock()
	}
	f.unref(c)
}

// finished tells whether c has its result; f.mu must be held.
func (c *call) finished() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (f *flights) unref(c *call) {
	f.mu.Lock()
	c.refs--
	last := c.refs == 0
	f.mu.Unlock()
	if last && c.val != nil {
		c.val.release()
	}
}
