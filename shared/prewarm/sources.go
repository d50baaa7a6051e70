package prewarm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/misskey-lambda/media-proxy/shared/jobs"
)

// maxEmojiList bounds the instance's answer; the largest instances list a
// few tens of thousands of emoji in a few megabytes.
const maxEmojiList = 64 << 20

// EmojiURLs asks a Misskey instance for its custom emoji (POST
// <instance>/api/emojis with body {}) and returns their image URLs,
// without duplicates. The instance is the operator's own input, so it is
// fetched with a plain client; the emoji images themselves are fetched
// later by the proxy's guarded pipeline. An instance given without a
// scheme gets https.
func EmojiURLs(ctx context.Context, client *http.Client, instance string) ([]string, error) {
	if !strings.Contains(instance, "://") {
		instance = "https://" + instance
	}
	base, err := url.Parse(instance)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("instance %q: want an http(s) URL", instance)
	}
	endpoint := base.JoinPath("api", "emojis")
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint.String(), strings.NewReader("{}"))
	if err != nil {
		return nil, fmt.Errorf("instance %s: %w", instance, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("list emoji: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return nil, fmt.Errorf("list emoji: %s answered %s: %s", endpoint, resp.Status, bytes.TrimSpace(snippet))
	}
	var body struct {
		Emojis []struct {
			Name string `json:"name"`
			URL  string `json:"url"`
		} `json:"emojis"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxEmojiList)).Decode(&body); err != nil {
		return nil, fmt.Errorf("list emoji: decode %s: %w", endpoint, err)
	}
	var urls []string
	seen := map[string]bool{}
	for _, e := range body.Emojis {
		if e.URL == "" {
			continue
		}
		// Absolute in practice; resolved in case an instance says "/files/...".
		ref, err := url.Parse(e.URL)
		if err != nil {
			continue
		}
		u := base.ResolveReference(ref).String()
		if _, err := (jobs.Job{URL: u}).Source(); err != nil || seen[u] {
			continue
		}
		seen[u] = true
		urls = append(urls, u)
	}
	return urls, nil
}

// ReadURLs reads source URLs one per line, skipping blank lines and lines
// starting with #, without duplicates. A line that is not an absolute
// http(s) URL is an error naming it.
func ReadURLs(r io.Reader) ([]string, error) {
	var urls []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if _, err := (jobs.Job{URL: line}).Source(); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if !seen[line] {
			seen[line] = true
			urls = append(urls, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read URLs: %w", err)
	}
	return urls, nil
}
