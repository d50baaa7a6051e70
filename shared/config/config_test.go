package config

import (
	"strings"
	"testing"
	"time"
)

func load(vars map[string]string) (Config, error) {
	return Load(func(k string) string { return vars[k] })
}

func TestDefaults(t *testing.T) {
	c, err := load(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != "3000" || !strings.HasPrefix(c.Store, "dir:") || c.Queue != "local" || c.MaxSize != 250<<20 ||
		c.FetchTimeout != 60*time.Second || c.MaxPixels != 100_000_000 || c.AllowOrigin != "*" || c.OnLambda {
		t.Errorf("defaults: %+v", c)
	}
	if !strings.HasPrefix(c.ContentSecurityPolicy, "default-src 'none'") {
		t.Errorf("CSP %q", c.ContentSecurityPolicy)
	}
}

func TestLambdaDefaults(t *testing.T) {
	if _, err := load(map[string]string{"AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001"}); err == nil {
		t.Error("Lambda without a store configured was accepted")
	}
	c, err := load(map[string]string{"AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001", "MEDIA_PROXY_STORE": "s3://bucket/prefix/"})
	if err != nil {
		t.Fatal(err)
	}
	if !c.OnLambda || c.Queue != "none" {
		t.Errorf("on Lambda: %+v", c)
	}
}

func TestParsing(t *testing.T) {
	c, err := load(map[string]string{
		"PORT":                                 "8080",
		"MEDIA_PROXY_STORE":                    "none",
		"MEDIA_PROXY_ALLOWED_PRIVATE_NETWORKS": "10.0.0.0/8, fd00::/8",
		"MEDIA_PROXY_MAX_SIZE":                 "1000",
		"MEDIA_PROXY_FETCH_TIMEOUT":            "5s",
		"MEDIA_PROXY_S3_PATH_STYLE":            "true",
		"MEDIA_PROXY_LOG_LEVEL":                "debug",
		"MEDIA_PROXY_PUBLIC_BASE_URL":          "https://cdn.example/",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != "8080" || c.Store != "none" || len(c.AllowedPrivate) != 2 || c.MaxSize != 1000 ||
		c.FetchTimeout != 5*time.Second || !c.S3PathStyle || c.LogLevel.String() != "DEBUG" || c.PublicBaseURL != "https://cdn.example" {
		t.Errorf("parsed: %+v", c)
	}
}

func TestErrors(t *testing.T) {
	for name, vars := range map[string]map[string]string{
		"store":    {"MEDIA_PROXY_STORE": "ftp://x"},
		"empty s3": {"MEDIA_PROXY_STORE": "s3://"},
		"size":     {"MEDIA_PROXY_MAX_SIZE": "big"},
		"negative": {"MEDIA_PROXY_MAX_SIZE": "-1"},
		"cidr":     {"MEDIA_PROXY_ALLOWED_PRIVATE_NETWORKS": "10.0.0.0/99"},
		"timeout":  {"MEDIA_PROXY_FETCH_TIMEOUT": "soon"},
		"bool":     {"MEDIA_PROXY_S3_PATH_STYLE": "maybe"},
		"level":    {"MEDIA_PROXY_LOG_LEVEL": "loud"},
	} {
		if _, err := load(vars); err == nil {
			t.Errorf("%s: accepted %v", name, vars)
		}
	}
}
