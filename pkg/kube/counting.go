package kube

import (
	"net/http"
	"sync/atomic"
)

// APICounter counts the daemon's API requests: reads (GET/LIST), writes
// (POST/PUT/PATCH/DELETE) and watches. Benchmarks read it to report API
// calls per ADD.
type APICounter struct {
	Reads, Writes, Watches atomic.Int64
}

// Wrap returns a round tripper that counts through c.
func (c *APICounter) Wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		switch {
		case r.URL.Query().Get("watch") == "true":
			c.Watches.Add(1)
		case r.Method == http.MethodGet:
			c.Reads.Add(1)
		default:
			c.Writes.Add(1)
		}
		return rt.RoundTrip(r)
	})
}

// Snapshot returns the counters as a map.
func (c *APICounter) Snapshot() map[string]int64 {
	return map[string]int64{"reads": c.Reads.Load(), "writes": c.Writes.Load(), "watches": c.Watches.Load()}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
