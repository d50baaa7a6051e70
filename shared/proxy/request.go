package proxy

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/misskey-lambda/media-proxy/shared/fetch"
	"github.com/misskey-lambda/media-proxy/shared/problem"
	"github.com/misskey-lambda/media-proxy/shared/variant"
)

// request is one query, parsed once: what to fetch, what to make of it,
// and where the result and a failure are kept.
type request struct {
	// src is the canonical source URL: the store key is derived from it
	// and it is exactly what the fetcher requests.
	src      *url.URL
	kind     variant.Kind
	fallback bool
	// key and failKey name the variant and its failure marker.
	key, failKey string
	// logURL is the source for the log line, without user info or query.
	logURL string
	// start is when the request came in: a failure found long after it
	// is worth storing (failure.Stored).
	start time.Time
}

// parseRequest reads the path and query. A request the proxy will not
// serve gets its status (404 for another path, 400 for a bad query or
// URL, 403 for a refused port) before anything is fetched, so a refused
// spelling can never touch the failure memory of the URL it resembles.
func parseRequest(r *http.Request, canonical func(string) (*url.URL, error)) (request, int) {
	req := request{start: time.Now()}
	if !routable(r.URL.Path) {
		return req, http.StatusNotFound
	}
	q, err := parseQuery(r.URL.RawQuery)
	_, req.fallback = q["fallback"]
	req.kind = variant.FromQuery(q)
	vals := q["url"]
	if err != nil || len(vals) != 1 {
		return req, http.StatusBadRequest
	}
	if u, err := url.Parse(vals[0]); err == nil {
		req.logURL = fetch.Redact(u)
	}
	src, err := canonical(vals[0])
	if err != nil {
		return req, problem.Status(err)
	}
	if src == nil {
		return req, http.StatusBadRequest
	}
	req.src = src
	req.logURL = fetch.Redact(src)
	c := src.String()
	req.key = variant.Key(c, req.kind)
	req.failKey = variant.FailureKey(c, req.kind)
	return req, 0
}

// parseQuery reads the parameters the proxy knows (variant.QueryParameters)
// and ignores every other, even one url.ParseQuery would refuse: nothing
// but these may change an answer, which is what lets a CDN keep only them
// in its cache key. A known parameter that cannot be read is an error.
func parseQuery(raw string) (url.Values, error) {
	q := url.Values{}
	var bad error
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(pair, "=")
		key, err := url.QueryUnescape(k)
		if err != nil || !slices.Contains(variant.QueryParameters, key) {
			continue
		}
		value, err := url.QueryUnescape(v)
		if err != nil {
			bad = err
			continue
		}
		q[key] = append(q[key], value)
	}
	return q, bad
}

// routable accepts "/<name>" and "/proxy/<name>" with a non-empty name.
func routable(path string) bool {
	name := strings.TrimPrefix(path, "/proxy/")
	if name == path {
		name = strings.TrimPrefix(path, "/")
	}
	return name != "" && !strings.Contains(name, "/")
}
