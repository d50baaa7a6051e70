package infra

import (
	"archive/zip"
	"bufio"
	"debug/elf"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/misskey-lambda/media-proxy/shared/lambdatest"
)

// These tests check what scripts/package built in dist/. They skip when it
// has not been built, unless MEDIA_PROXY_TEST_REQUIRE_PACKAGE=1.

const (
	libvipsSO = "libvips-cpp.so.8.18.7"
	// Lambda's deployment package quotas.
	maxZipped   = 50 << 20
	maxUnzipped = 250 << 20
)

var machines = map[string]elf.Machine{"arm64": elf.EM_AARCH64, "x86_64": elf.EM_X86_64}

// packaged returns the zips of arch's functions, or skips.
func packaged(t *testing.T, arch string) map[string]string {
	t.Helper()
	zips := map[string]string{}
	for _, fn := range functions {
		if _, err := os.Stat(filepath.Join("..", "functions", fn)); err != nil {
			continue // not written yet: scripts/package skips it too
		}
		zips[fn] = filepath.Join("..", "dist", arch, fn+".zip")
	}
	for _, z := range zips {
		if _, err := os.Stat(z); err != nil {
			if os.Getenv("MEDIA_PROXY_TEST_REQUIRE_PACKAGE") == "1" {
				t.Fatalf("%s is missing: run scripts/package --arch %s", z, arch)
			}
			t.Skipf("%s has not been built (scripts/package --arch %s); MEDIA_PROXY_TEST_REQUIRE_PACKAGE=1 turns this skip into a failure", z, arch)
		}
	}
	return zips
}

// need skips for a missing tool, or fails under MEDIA_PROXY_TEST_REQUIRE_PACKAGE=1.
func need(t *testing.T, what string, ok bool) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("MEDIA_PROXY_TEST_REQUIRE_PACKAGE") == "1" {
		t.Fatalf("%s is missing", what)
	}
	t.Skipf("%s is missing", what)
}

// unpack extracts a zip into a new empty folder, modes included, as Lambda
// does into /var/task.
func unpack(t *testing.T, zipPath string) string {
	t.Helper()
	zr, err := zip.OpenReader(zipPath)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	dir := t.TempDir()
	for _, f := range zr.File {
		dst := filepath.Join(dir, filepath.FromSlash(f.Name))
		if !strings.HasPrefix(dst, dir+string(filepath.Separator)) {
			t.Fatalf("%s: entry %q escapes the folder", zipPath, f.Name)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		r, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		w, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, f.Mode().Perm())
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(w, r)
		r.Close()
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// baseLibs reads al2023-libs.txt: soname -> newest version per family
// ("GLIBC" -> "2.34").
func baseLibs(t *testing.T) map[string]map[string]string {
	t.Helper()
	f, err := os.Open("al2023-libs.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	libs := map[string]map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		libs[fields[0]] = map[string]string{}
		for _, v := range fields[1:] {
			family, version, ok := strings.Cut(v, "_")
			if !ok {
				t.Fatalf("al2023-libs.txt: bad version %q", v)
			}
			libs[fields[0]][family] = version
		}
	}
	return libs
}

// newer reports whether dotted version a is above b.
func newer(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(as), len(bs)); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x > y
		}
	}
	return false
}

func TestArtifacts(t *testing.T) {
	base := baseLibs(t)
	for _, arch := range []string{"arm64", "x86_64"} {
		t.Run(arch, func(t *testing.T) {
			for fn, zipPath := range packaged(t, arch) {
				t.Run(fn, func(t *testing.T) {
					checkZip(t, zipPath)
					dir := unpack(t, zipPath)
					for _, name := range []string{"bootstrap", "lib/" + libvipsSO} {
						checkELF(t, dir, name, machines[arch], base)
					}
				})
			}
		})
	}
}

func checkZip(t *testing.T, zipPath string) {
	st, err := os.Stat(zipPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > maxZipped {
		t.Errorf("%s is %d bytes; Lambda takes at most %d zipped", zipPath, st.Size(), maxZipped)
	}
	zr, err := zip.OpenReader(zipPath)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	var names []string
	var unzipped uint64
	for _, f := range zr.File {
		names = append(names, f.Name)
		unzipped += f.UncompressedSize64
		if f.Mode().Perm()&0o444 != 0o444 {
			t.Errorf("%s: %s is not world-readable (%v); Lambda runs as another user", zipPath, f.Name, f.Mode())
		}
		if f.Name == "bootstrap" && f.Mode().Perm()&0o111 != 0o111 {
			t.Errorf("%s: bootstrap is not executable (%v)", zipPath, f.Mode())
		}
	}
	if unzipped > maxUnzipped {
		t.Errorf("%s unpacks to %d bytes; Lambda takes at most %d", zipPath, unzipped, maxUnzipped)
	}
	slices.Sort(names)
	if want := []string{"bootstrap", "lib/" + libvipsSO}; !slices.Equal(names, want) {
		t.Errorf("%s holds %v, want %v", zipPath, names, want)
	}
	t.Logf("%s: %d bytes zipped, %d unzipped", filepath.Base(zipPath), st.Size(), unzipped)
}

// checkELF checks one binary's machine, search path and every library and
// symbol version it needs from outside the bundle.
func checkELF(t *testing.T, dir, name string, machine elf.Machine, base map[string]map[string]string) {
	t.Helper()
	f, err := elf.Open(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != machine {
		t.Errorf("%s is %v, want %v", name, f.Machine, machine)
	}
	runpath, _ := f.DynString(elf.DT_RUNPATH)
	rpath, _ := f.DynString(elf.DT_RPATH)
	want := map[string]string{"bootstrap": "$ORIGIN/lib", "lib/" + libvipsSO: "$ORIGIN/"}[name]
	if len(runpath) != 1 || runpath[0] != want || len(rpath) != 0 {
		t.Errorf("%s: RUNPATH %q RPATH %q, want RUNPATH %q alone (no build-machine paths)", name, runpath, rpath, want)
	}
	bundled, _ := os.ReadDir(filepath.Join(dir, "lib"))
	inBundle := func(lib string) bool {
		return slices.ContainsFunc(bundled, func(e os.DirEntry) bool { return e.Name() == lib })
	}
	needed, err := f.DynString(elf.DT_NEEDED)
	if err != nil {
		t.Fatal(err)
	}
	for _, lib := range needed {
		if _, ok := base[lib]; !ok && !inBundle(lib) {
			t.Errorf("%s needs %s, which is neither in lib/ nor on the AL2023 list (al2023-libs.txt)", name, lib)
		}
	}
	vneeds, err := f.DynamicVersionNeeds()
	if err != nil {
		t.Fatal(err)
	}
	for _, vn := range vneeds {
		ceilings, ok := base[vn.Name]
		if !ok {
			continue // bundled
		}
		for _, dep := range vn.Needs {
			family, version, _ := strings.Cut(dep.Dep, "_")
			ceiling, known := ceilings[family]
			switch {
			case !known:
				t.Errorf("%s needs %s from %s; al2023-libs.txt lists no %s versions for it", name, dep.Dep, vn.Name, family)
			case newer(version, ceiling):
				t.Errorf("%s needs %s from %s; Amazon Linux 2023 provides up to %s_%s", name, dep.Dep, vn.Name, family, ceiling)
			}
		}
	}
}

// loadedLibraries asks the target's dynamic loader which files it would map,
// with no environment (so no LD_LIBRARY_PATH): the bundle must find its
// libraries by itself.
func loadedLibraries(t *testing.T, dir string, loader []string) map[string]string {
	t.Helper()
	cmd := exec.Command(loader[0], append(loader[1:], "--list", filepath.Join(dir, "bootstrap"))...)
	cmd.Env = []string{}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v --list: %v\n%s", loader, err, out)
	}
	libs := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if name, path, ok := strings.Cut(strings.TrimSpace(line), " => "); ok {
			libs[name] = strings.Fields(path)[0]
		}
	}
	return libs
}

func TestX86RunsUnderLambdaEmulator(t *testing.T) {
	zips := packaged(t, "x86_64")
	rie := os.Getenv("MEDIA_PROXY_TEST_RIE")
	if rie == "" {
		if p, err := filepath.Abs(filepath.Join("..", ".deps", "bin", "aws-lambda-rie")); err == nil {
			if _, err := os.Stat(p); err == nil {
				rie = p
			}
		}
	}
	if rie == "" {
		rie, _ = exec.LookPath("aws-lambda-rie")
	}
	need(t, "aws-lambda-rie (set MEDIA_PROXY_TEST_RIE, or see scripts/lib/standins.sh)", rie != "")

	for fn, zipPath := range zips {
		t.Run(fn, func(t *testing.T) {
			dir := unpack(t, zipPath)
			if loader := "/lib64/ld-linux-x86-64.so.2"; fileExists(loader) {
				libs := loadedLibraries(t, dir, []string{loader})
				if got, want := libs[libvipsSO], filepath.Join(dir, "lib", libvipsSO); got != want {
					t.Errorf("libvips loads from %q, want the bundled %q", got, want)
				}
			}
			// Nothing but the artifact's own folder and a minimal environment.
			e := lambdatest.Start(t, rie, dir, "./bootstrap", []string{"MEDIA_PROXY_STORE=none"})
			switch fn {
			case "proxy":
				request := func(method string, headers map[string]string) lambdatest.Prelude {
					resp, _ := e.InvokeURL(t, events.LambdaFunctionURLRequest{
						Version: "2.0", RawPath: "/", Headers: headers,
						RequestContext: events.LambdaFunctionURLRequestContext{
							RequestID:  "artifact-test",
							DomainName: "example.lambda-url.us-east-1.on.aws",
							HTTP:       events.LambdaFunctionURLRequestContextHTTPDescription{Method: method, Path: "/", SourceIP: "192.0.2.1"},
						},
					})
					return resp
				}
				if resp := request("GET", map[string]string{}); resp.StatusCode != http.StatusOK {
					t.Errorf("GET / through the Function URL event: status %d", resp.StatusCode)
				}
				// The Function URL has no Cors block: the proxy answers preflights.
				resp := request("OPTIONS", map[string]string{"origin": "https://misskey.example", "access-control-request-method": "GET"})
				h := http.Header{}
				for k, v := range resp.Headers {
					h.Add(k, v)
				}
				if resp.StatusCode != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != "*" ||
					!strings.Contains(h.Get("Access-Control-Allow-Methods"), "OPTIONS") {
					t.Errorf("CORS preflight: status %d, headers %v", resp.StatusCode, resp.Headers)
				}
			case "worker":
				var resp events.SQSEventResponse
				e.InvokeJSON(t, events.SQSEvent{Records: []events.SQSMessage{}}, &resp)
				if len(resp.BatchItemFailures) != 0 {
					t.Errorf("an empty batch reported failures: %+v", resp.BatchItemFailures)
				}
			}
		})
	}
}

func TestArm64ServesUnderQEMU(t *testing.T) {
	zips := packaged(t, "arm64")
	qemu, err := exec.LookPath("qemu-aarch64-static")
	if err != nil {
		qemu, _ = exec.LookPath("qemu-aarch64")
	}
	need(t, "qemu-aarch64 (apt-get install qemu-user-static)", qemu != "")
	prefix := os.Getenv("QEMU_LD_PREFIX")
	if prefix == "" {
		prefix = "/usr/aarch64-linux-gnu" // Debian's libc6-arm64-cross
	}
	loader := filepath.Join(prefix, "lib", "ld-linux-aarch64.so.1")
	need(t, loader+" (apt-get install libc6-arm64-cross libstdc++6-arm64-cross, or set QEMU_LD_PREFIX)", fileExists(loader))

	for fn, zipPath := range zips {
		t.Run(fn, func(t *testing.T) {
			dir := unpack(t, zipPath)
			libs := loadedLibraries(t, dir, []string{qemu, "-L", prefix, loader})
			if got, want := libs[libvipsSO], filepath.Join(dir, "lib", libvipsSO); got != want {
				t.Errorf("libvips loads from %q, want the bundled %q", got, want)
			}
			if fn != "proxy" {
				return // the worker only runs under Lambda
			}
			// The same binary is a plain HTTP server outside Lambda.
			addr := lambdatest.FreeAddr(t)
			_, port, _ := net.SplitHostPort(addr)
			cmd := exec.Command(qemu, "./bootstrap")
			cmd.Dir = dir
			cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir, "QEMU_LD_PREFIX=" + prefix, "PORT=" + port, "MEDIA_PROXY_STORE=none"}
			logs := new(lambdatest.Buffer)
			cmd.Stdout, cmd.Stderr = logs, logs
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				cmd.Process.Kill()
				cmd.Wait()
				if t.Failed() {
					t.Logf("proxy log:\n%s", logs)
				}
			})
			lambdatest.WaitForPort(t, addr, 60*time.Second, logs)
			resp, err := http.Get("http://" + addr + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET /: status %d, body %q", resp.StatusCode, body)
			}
		})
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
