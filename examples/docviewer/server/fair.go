package server

import (
	"context"
	"net/http"
	"sync"
)

// clientTurns bounds the requests one client (clientOf) has in flight, per
// kind: a script that asks for hundreds of pages at once waits its turn
// instead of filling the backend's queue, which every client shares, so
// that other clients meet 503s. Folder mode and web mode keep one each.
type clientTurns struct {
	mu sync.Mutex
	m  map[string]*slots // by kind and client
}

// slots are one client's slots of one kind; users counts the requests
// holding or waiting for one, so the entry goes when the last leaves.
type slots struct {
	ch    chan struct{}
	users int
}

func newClientTurns() *clientTurns { return &clientTurns{m: map[string]*slots{}} }

// turn waits, at most clientWait, for one of n slots of key; release gives
// it back.
func (c *clientTurns) turn(ctx context.Context, key string, n int) (release func(), err error) {
	c.mu.Lock()
	sl := c.m[key]
	if sl == nil {
		sl = &slots{ch: make(chan struct{}, n)}
		c.m[key] = sl
	}
	sl.users++
	c.mu.Unlock()
	leave := func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if sl.users--; sl.users == 0 {
			delete(c.m, key)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, clientWait)
	defer cancel()
	select {
	case sl.ch <- struct{}{}:
	case <-ctx.Done():
		leave()
		return nil, ctx.Err()
	}
	return func() {
		<-sl.ch
		leave()
	}, nil
}

// page waits for one of client's maxClientPages page slots.
func (c *clientTurns) page(ctx context.Context, client string) (release func(), err error) {
	return c.turn(ctx, "page "+client, maxClientPages)
}

// safe waits for client's one safe PDF slot.
func (c *clientTurns) safe(ctx context.Context, client string) (release func(), err error) {
	return c.turn(ctx, "safe "+client, maxClientSafe)
}

// idle reports whether no client holds or waits for a slot.
func (c *clientTurns) idle() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m) == 0
}

// pageTurn takes one of the request's client's maxClientPages page slots
// in turns, or answers 429 and reports false.
func pageTurn(w http.ResponseWriter, r *http.Request, turns *clientTurns) (release func(), ok bool) {
	return takeTurn(w, r, turns.page, "5", "too many page requests from this client at once")
}

// safeTurn takes the request's client's one safe PDF slot in turns, or
// answers 429 and reports false.
func safeTurn(w http.ResponseWriter, r *http.Request, turns *clientTurns) (release func(), ok bool) {
	return takeTurn(w, r, turns.safe, "30", "this client is converting another document; one at a time")
}

func takeTurn(w http.ResponseWriter, r *http.Request, take func(context.Context, string) (func(), error), retry, refusal string) (release func(), ok bool) {
	release, err := take(r.Context(), clientOf(r))
	if err != nil {
		w.Header().Set("Retry-After", retry)
		http.Error(w, refusal, http.StatusTooManyRequests)
		return nil, false
	}
	return release, true
}
