package config

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/misskey-lambda/media-proxy/shared/transform"
)

// readmeRow is one row of the README's configuration table.
type readmeRow struct {
	names []string
	def   string
}

// readmeTable reads the table under "## Configuration" in the README.
func readmeTable(t *testing.T) map[string]readmeRow {
	t.Helper()
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(raw), "\n## Configuration\n")
	if !ok {
		t.Fatal("README has no Configuration section")
	}
	name := regexp.MustCompile("`([A-Z][A-Z0-9_]*)`")
	rows := map[string]readmeRow{}
	inTable := false
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "|") {
			if inTable {
				break
			}
			continue
		}
		inTable = true
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) < 3 || !strings.HasPrefix(strings.TrimSpace(cells[0]), "`") {
			continue // the header and its rule
		}
		var row readmeRow
		for _, m := range name.FindAllStringSubmatch(cells[0], -1) {
			row.names = append(row.names, m[1])
		}
		row.def = strings.TrimSpace(cells[1])
		for _, n := range row.names {
			rows[n] = row
		}
	}
	if len(rows) < 20 {
		t.Fatalf("read %d variables from the README's table; the parse is broken", len(rows))
	}
	return rows
}

// TestReadmeTable: the README's table and Load name the same variables,
// with the same defaults; the defaults are written once, in settings.
func TestReadmeTable(t *testing.T) {
	rows := readmeTable(t)
	// Variables others read: the AWS SDK, the Go runtime.
	readByOthers := []string{"AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SQS", "GOMEMLIMIT"}
	// Variables Load reads that are not settings: Lambda sets them.
	setByLambda := []string{"AWS_LAMBDA_RUNTIME_API", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"}

	specs := map[string]setting{}
	for _, s := range settings() {
		specs[s.name] = s
		row, ok := rows[s.name]
		if !ok {
			t.Errorf("%s is read by Load but not in the README's table", s.name)
			continue
		}
		switch {
		case s.def != "":
			if !strings.HasPrefix(row.def, "`"+s.def+"`") {
				t.Errorf("%s: README default %q, Load's is %q", s.name, row.def, s.def)
			}
		case row.def != s.auto:
			t.Errorf("%s: README default %q, Load's %q", s.name, row.def, s.auto)
		}
		// Every default parses.
		if s.def != "" {
			if err := s.parse(&Config{}, s.def); err != nil {
				t.Errorf("%s: default %q: %v", s.name, s.def, err)
			}
		}
	}
	for n := range rows {
		if _, ok := specs[n]; !ok && !slices.Contains(readByOthers, n) {
			t.Errorf("README's table has %s, which Load does not read", n)
		}
	}

	// What Load really asks the environment for, off and on Lambda.
	for _, env := range []map[string]string{{}, {"AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001", "MEDIA_PROXY_STORE": "none"}} {
		read := map[string]bool{}
		if _, err := Load(func(k string) string { read[k] = true; return env[k] }); err != nil {
			t.Fatal(err)
		}
		for n := range read {
			s, ok := specs[strings.ToUpper(n)]
			switch {
			case slices.Contains(setByLambda, n):
			case !ok:
				t.Errorf("Load reads %s, which is not in settings", n)
			case n != s.name && !s.lower:
				t.Errorf("Load reads %s, a spelling settings does not name", n)
			}
		}
		for n := range specs {
			if !read[n] {
				t.Errorf("settings lists %s but Load never reads it", n)
			}
		}
	}
}

// TestLibraryDefaults: transform keeps defaults of its own for a zero
// Limits (config cannot import it: it is cgo); they must be config's.
func TestLibraryDefaults(t *testing.T) {
	c, err := Load(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxPixels != transform.DefaultLimits.MaxPixels || c.MaxFrames != transform.DefaultLimits.MaxFrames {
		t.Errorf("config's limits %d pixels, %d frames; transform's %+v", c.MaxPixels, c.MaxFrames, transform.DefaultLimits)
	}
}
