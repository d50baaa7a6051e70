// Command fn serves a few fixed responses through functionurl.Handler, for
// tests that run it against a runtime API stand-in with aws-lambda-go's
// real runtime client.
package main

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/misskey-lambda/media-proxy/shared/functionurl"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	common := http.Header{"X-Content-Type-Options": {"nosniff"}, "Access-Control-Allow-Origin": {"*"}}
	lambda.Start(functionurl.Handler(http.HandlerFunc(serve), log, common))
}

func serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Access-Control-Allow-Origin", "*")
	switch r.URL.Path {
	case "/relay":
		// Copies the body of the URL in ?from as it arrives, as the proxy
		// does with a miss: the test's origin decides the pace.
		resp, err := http.Get(r.URL.Query().Get("from"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Type", "video/mp4")
		w.Header().Set("Cache-Control", "max-age=31536000, immutable")
		w.Header().Set("Content-Length", resp.Header.Get("Content-Length"))
		buf := make([]byte, 32<<10)
		for {
			n, err := resp.Body.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err == io.EOF {
				// Work after the last byte, as the proxy's store copy
				// finishing: the invocation must not end before it.
				time.Sleep(100 * time.Millisecond)
				if done, err := http.Get(r.URL.Query().Get("done")); err == nil {
					done.Body.Close()
				}
				return
			}
			if err != nil {
				// A broken origin after the headers: the proxy panics so.
				panic(http.ErrAbortHandler)
			}
		}
	case "/big":
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(bytes.Repeat([]byte{0xa5}, 9<<20))
	default:
		http.NotFound(w, r)
	}
}
