package infra

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/awslabs/goformation/v7/cloudformation/iam"
	"github.com/awslabs/goformation/v7/cloudformation/lambda"

	"github.com/misskey-lambda/media-proxy/shared/config"
	"github.com/misskey-lambda/media-proxy/shared/fetch"
	"github.com/misskey-lambda/media-proxy/shared/variant"
)

// cloudFrontDomain stands for the distribution's domain that scripts/deploy
// passes as PublicBaseUrl once the distribution exists.
const cloudFrontDomain = "d111111abcdef8.cloudfront.net"

// functions maps the template's functions to scripts/package's artifacts.
var functions = map[string]string{"ProxyFunction": "proxy", "WorkerFunction": "worker"}

func defaults() map[string]string { return map[string]string{} }

func function(t *testing.T, r rendered, name string) *lambda.Function {
	t.Helper()
	f, err := r.GetLambdaFunctionWithName(name)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func env(t *testing.T, r rendered, name string) map[string]string {
	t.Helper()
	f := function(t, r, name)
	if f.Environment == nil {
		t.Fatalf("%s has no environment", name)
	}
	return f.Environment.Variables
}

// configDefaults is what the code uses when a variable is unset.
func configDefaults(t *testing.T) config.Config {
	t.Helper()
	cfg, err := config.Load(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// schemasDir holds registry schemas for resource types cfn-lint does not
// know yet (see infra/schemas/README.md).
const schemasDir = "schemas"

func TestCfnLint(t *testing.T) {
	// cfn-lint knows every resource's schema. scripts/test installs it (and
	// sets MEDIA_PROXY_TEST_REQUIRE_PACKAGE=1, so CI cannot skip this); a
	// developer laptop may lack it.
	lint, err := exec.LookPath("cfn-lint")
	need(t, "cfn-lint (scripts/test installs it into .deps/python-tools from scripts/lib/requirements.txt)", err == nil)
	// The proxy's stack in the regions the docs name; the edge stack only
	// ever in us-east-1, where CloudFront's web ACLs are made.
	for _, c := range [][]string{
		{templateFile, "--regions", "us-east-1", "ap-northeast-1", "eu-west-1"},
		{edgeFile, "--regions", "us-east-1", "--registry-schemas", schemasDir},
	} {
		out, err := exec.Command(lint, c...).CombinedOutput()
		if err != nil {
			t.Errorf("cfn-lint %s: %v\n%s", strings.Join(c, " "), err, out)
		}
	}
}

func TestFunctionsMatchPackage(t *testing.T) {
	pkg, err := os.ReadFile("../scripts/package")
	if err != nil {
		t.Fatal(err)
	}
	// The artifact layout scripts/package produces.
	for _, want := range []string{`-o "$out/bootstrap"`, `FUNCTIONS=(proxy worker)`, `arm64 | x86_64)`, `-tags lambda.norpc`} {
		if !strings.Contains(string(pkg), want) {
			t.Errorf("scripts/package no longer contains %q; the template relies on that layout", want)
		}
	}
	raw := rawTemplate(t)
	allowed := mapOf(mapOf(raw["Parameters"])["Architecture"])["AllowedValues"]
	if fmt.Sprint(allowed) != "[arm64 x86_64]" {
		t.Errorf("Architecture allows %v, scripts/package builds [arm64 x86_64]", allowed)
	}

	for _, arch := range []string{"", "arm64", "x86_64"} {
		params := map[string]string{"ArtifactBucket": "artifacts", "ProxyCodeKey": "p.zip", "WorkerCodeKey": "w.zip"}
		want := "arm64" // the default: cheaper per GB-second
		if arch != "" {
			params["Architecture"] = arch
			want = arch
		}
		r := render(t, params)
		for name, fn := range functions {
			f := function(t, r, name)
			if got := str(f.Runtime); got != "provided.al2023" {
				t.Errorf("%s runtime %q, want provided.al2023", name, got)
			}
			if got := str(f.Handler); got != "bootstrap" {
				t.Errorf("%s handler %q, want bootstrap", name, got)
			}
			if got := str(f.PackageType); got != "Zip" {
				t.Errorf("%s package type %q, want Zip", name, got)
			}
			if !slices.Equal(f.Architectures, []string{want}) {
				t.Errorf("%s architectures %v, want [%s]", name, f.Architectures, want)
			}
			key := map[string]string{"proxy": "p.zip", "worker": "w.zip"}[fn]
			if f.Code == nil || str(f.Code.S3Bucket) != "artifacts" || str(f.Code.S3Key) != key {
				t.Errorf("%s code %+v, want s3://artifacts/%s", name, f.Code, key)
			}
		}
	}

	// The container-image fallback runs the same folders from infra/Dockerfile.
	dockerfile, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	r := render(t, map[string]string{"ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/mmp:1"})
	for name, fn := range functions {
		f := function(t, r, name)
		if str(f.PackageType) != "Image" || f.Runtime != nil || f.Handler != nil || f.Code == nil || f.Code.S3Key != nil ||
			str(f.Code.ImageUri) == "" {
			t.Errorf("%s with ImageUri: package %q runtime %v handler %v code %+v", name, str(f.PackageType), f.Runtime, f.Handler, f.Code)
		}
		entry := "/var/task/" + fn + "/bootstrap"
		if f.ImageConfig == nil || !slices.Equal(f.ImageConfig.EntryPoint, []string{entry}) {
			t.Errorf("%s image entry point %+v, want %s", name, f.ImageConfig, entry)
		}
		if copyLine := "COPY dist/${ARCH}/" + fn + "/ /var/task/" + fn + "/"; !strings.Contains(string(dockerfile), copyLine) {
			t.Errorf("infra/Dockerfile lacks %q", copyLine)
		}
	}
}

// readByCode lists the MEDIA_PROXY_* variables the deployed functions'
// packages read, from their Go sources (tests excluded).
func readByCode(t *testing.T) map[string]bool {
	t.Helper()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not in PATH")
	}
	out, err := exec.Command(goCmd, "list", "-deps", "-f",
		`{{if .Module}}{{if eq .Module.Path "github.com/misskey-lambda/media-proxy"}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{range .CgoFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{end}}{{end}}`,
		"../functions/proxy", "../functions/worker").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	name := regexp.MustCompile(`"(MEDIA_PROXY_[A-Z0-9_]+)"`)
	vars := map[string]bool{}
	for _, file := range strings.Fields(string(out)) {
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range name.FindAllStringSubmatch(string(src), -1) {
			vars[m[1]] = true
		}
	}
	if !vars["MEDIA_PROXY_STORE"] {
		t.Fatalf("found no MEDIA_PROXY_STORE in %d files; the scan is broken", len(strings.Fields(string(out))))
	}
	return vars
}

// leftToDefaults are the variables the stack deliberately does not set,
// and why. A variable the code starts reading must be added to the
// template or here.
var leftToDefaults = map[string]string{
	"MEDIA_PROXY_S3_PATH_STYLE":            "AWS S3 uses virtual-hosted addressing",
	"MEDIA_PROXY_ALLOWED_PRIVATE_NETWORKS": "nothing private is reachable or allowed from Lambda",
	"MEDIA_PROXY_CONNECT_TIMEOUT":          "the defaults fit in the function timeouts (checked below)",
	"MEDIA_PROXY_RESPONSE_TIMEOUT":         "the defaults fit in the function timeouts (checked below)",
	"MEDIA_PROXY_FETCH_TIMEOUT":            "the defaults fit in the function timeouts (checked below)",
	"MEDIA_PROXY_PRESIGN_TTL":              "presigned redirects (no CloudFront) keep the code's default",
	"MEDIA_PROXY_MAX_PIXELS":               "the code's limits are sized for the default memory",
	"MEDIA_PROXY_MAX_FRAMES":               "the code's limits are sized for the default memory",
	"MEDIA_PROXY_TRANSFORM_CONCURRENCY":    "defaults to the vCPUs Lambda gives for the memory size",
	"MEDIA_PROXY_VIPS_CONCURRENCY":         "libvips' default follows the vCPUs too",
	"MEDIA_PROXY_WEBP_SMART_SUBSAMPLE":     "the reference's encoding; trading it for CPU is the admin's choice",
	"MEDIA_PROXY_WORKER_CONCURRENCY":       "jobs per batch run with the code's default",
	"MEDIA_PROXY_CSP":                      "the default is the proxy's CSP, also set by CloudFront (checked below)",
	"MEDIA_PROXY_CORS_ALLOW_ORIGIN":        "the default * matches the Function URL's and CloudFront's CORS",
	"MEDIA_PROXY_CORS_ALLOW_HEADERS":       "the default * matches the Function URL's and CloudFront's CORS",
	"MEDIA_PROXY_CORS_ALLOW_METHODS":       "the default matches the Function URL's and CloudFront's CORS",
	"MEDIA_PROXY_LOG_LEVEL":                "info",
	"MEDIA_PROXY_BIND_ADDRESS":             "local server only; Lambda serves through the runtime API",
	"MEDIA_PROXY_MAX_CONNECTIONS":          "local server only",
	"MEDIA_PROXY_WRITE_TIMEOUT":            "local server only",
	"MEDIA_PROXY_STORE_MAX_SIZE":           "the on-disk store's budget; the stack stores in S3",
	"MEDIA_PROXY_TRUST_OUTGOING_PROXY":     "no outgoing proxy on Lambda",
	"MEDIA_PROXY_ALLOWED_PORTS":            "the code's default destination ports (80, 443)",
	"MEDIA_PROXY_MAX_CONVERT_SIZE":         "the code's limits are sized for the default memory",
	"MEDIA_PROXY_MEMORY_BUDGET":            "defaults to half the memory Lambda gives the function",
	"MEDIA_PROXY_TRANSFORM_TIMEOUT":        "the defaults fit in the function timeouts (checked below)",
	"MEDIA_PROXY_SVG_CHILD":                "not a setting: the process sets it for its own SVG renderer child",
	"MEDIA_PROXY_INLINE_HITS_BELOW":        "off by default: every hit is a redirect, as the design says",
	"MEDIA_PROXY_LAMBDA_STREAM_LIMIT":      "the code's default comes from the README's streaming model (its stream fits the proxy's time: checked below)",
}

// awaitingWiring are variables the stack sets for code that is being
// taught to read them (shared/config passes them to the store). Once the
// code reads one, TestEnvironmentCoversConfig asks for its removal here.
var awaitingWiring = map[string]string{}

func TestEnvironmentCoversConfig(t *testing.T) {
	read := readByCode(t)
	r := render(t, defaults())
	for _, fn := range []string{"ProxyFunction", "WorkerFunction"} {
		vars := env(t, r, fn)
		for v := range read {
			_, set := vars[v]
			_, defaulted := leftToDefaults[v]
			switch {
			case set && defaulted:
				t.Errorf("%s sets %s, which leftToDefaults says it leaves alone", fn, v)
			case !set && !defaulted:
				t.Errorf("%s: the code reads %s; set it in infra/template.yaml or add it to leftToDefaults with a reason", fn, v)
			}
		}
		for v := range vars {
			_, awaited := awaitingWiring[v]
			switch {
			case awaited && read[v]:
				t.Errorf("the code now reads %s: remove it from awaitingWiring", v)
			case strings.HasPrefix(v, "MEDIA_PROXY_") && !read[v] && !awaited:
				t.Errorf("%s sets %s, which no deployed code reads", fn, v)
			}
		}
	}
	for v := range leftToDefaults {
		if !read[v] {
			t.Errorf("leftToDefaults names %s, which the code no longer reads", v)
		}
	}

	// The defaults left alone must fit in the functions' time.
	cfg := configDefaults(t)
	for _, p := range []string{"ProxyTimeout", "WorkerTimeout"} {
		secs, _ := strconv.Atoi(fmt.Sprint(mapOf(mapOf(rawTemplate(t)["Parameters"])[p])["Default"]))
		if d := time.Duration(secs) * time.Second; d <= cfg.FetchTimeout+cfg.TransformTimeout || d <= cfg.ConnectTimeout+cfg.ResponseTimeout {
			t.Errorf("%s default %v leaves no time after a fetch (timeout %v)", p, d, cfg.FetchTimeout)
		}
	}
	// A streamed miss at the limit takes at least its bytes past Lambda's
	// 6 MB burst at 2 MB/s, however fast the origin: that too must fit in
	// the least time the proxy may have.
	least, _ := strconv.Atoi(fmt.Sprint(mapOf(mapOf(rawTemplate(t)["Parameters"])["ProxyTimeout"])["MinValue"]))
	const burst, rate = 6_000_000, 2_000_000
	if stream := time.Duration(cfg.LambdaStreamLimit-burst) * time.Second / rate; stream >= time.Duration(least)*time.Second/2 {
		t.Errorf("streaming %d bytes takes at least %v: over half of the least ProxyTimeout (%d s)", cfg.LambdaStreamLimit, stream, least)
	}
}

func TestEnvironmentValues(t *testing.T) {
	cfg := configDefaults(t)
	r := render(t, map[string]string{"PublicBaseUrl": "https://" + cloudFrontDomain})
	proxy, worker := env(t, r, "ProxyFunction"), env(t, r, "WorkerFunction")
	for name, vars := range map[string]map[string]string{"proxy": proxy, "worker": worker} {
		for k, want := range map[string]string{
			"MEDIA_PROXY_STORE":           "s3://" + refOf("MediaBucket") + "/",
			"MEDIA_PROXY_PUBLIC_BASE_URL": "https://" + cloudFrontDomain,
			"MEDIA_PROXY_USER_AGENT":      fetch.DefaultUserAgent,
			"MEDIA_PROXY_MAX_SIZE":        strconv.FormatInt(cfg.MaxSize, 10),
			"MEDIA_PROXY_METRICS":         "none",   // custom metrics are billed monthly; the dashboard reads the logs
			"GOMEMLIMIT":                  "819MiB", // 80 % of the default 1024 MB
		} {
			if vars[k] != want {
				t.Errorf("%s %s=%q, want %q", name, k, vars[k], want)
			}
		}
	}
	if got := proxy["MEDIA_PROXY_QUEUE"]; got != refOf("JobQueue") {
		t.Errorf("proxy MEDIA_PROXY_QUEUE=%q, want the queue URL %q", got, refOf("JobQueue"))
	}
	if got := worker["MEDIA_PROXY_QUEUE"]; got != "none" {
		t.Errorf("worker MEDIA_PROXY_QUEUE=%q, want none", got)
	}

	// Metrics cost money per metric; they can be asked for, and each
	// value is one the code accepts.
	for _, m := range listOf(mapOf(mapOf(rawTemplate(t)["Parameters"])["Metrics"])["AllowedValues"]) {
		r = render(t, map[string]string{"Metrics": fmt.Sprint(m)})
		for _, fn := range []string{"ProxyFunction", "WorkerFunction"} {
			v := env(t, r, fn)["MEDIA_PROXY_METRICS"]
			if _, err := config.Load(func(k string) string { return map[string]string{"MEDIA_PROXY_METRICS": v}[k] }); err != nil || v != fmt.Sprint(m) {
				t.Errorf("Metrics=%v: %s MEDIA_PROXY_METRICS=%q: %v", m, fn, v, err)
			}
		}
	}

	// Without the worker there is no queue to send to.
	r = render(t, map[string]string{"EnableWorker": "false"})
	if got := env(t, r, "ProxyFunction")["MEDIA_PROXY_QUEUE"]; got != "none" {
		t.Errorf("without the worker MEDIA_PROXY_QUEUE=%q, want none", got)
	}
	// Without CloudFront the proxy has no CDN to redirect to, whatever deploy passed.
	r = render(t, map[string]string{"EnableCloudFront": "false", "PublicBaseUrl": "https://stale.example"})
	if got := env(t, r, "ProxyFunction")["MEDIA_PROXY_PUBLIC_BASE_URL"]; got != "" {
		t.Errorf("without CloudFront MEDIA_PROXY_PUBLIC_BASE_URL=%q, want empty", got)
	}
	// A custom domain is known up front: no second deploy pass needed.
	r = render(t, map[string]string{"DomainName": "media.example.com", "CertificateArn": "arn:aws:acm:us-east-1:123456789012:certificate/x"})
	if got := env(t, r, "ProxyFunction")["MEDIA_PROXY_PUBLIC_BASE_URL"]; got != "https://media.example.com" {
		t.Errorf("with a custom domain MEDIA_PROXY_PUBLIC_BASE_URL=%q", got)
	}

	// The store learns the lifecycle rule's days, so that its redirects
	// never outlive the variants (shared/s3store, Config.Lifetime).
	for _, days := range []string{"", "45"} {
		params := map[string]string{}
		if days != "" {
			params["VariantRetentionDays"] = days
		}
		r := render(t, params)
		rule := variantExpiry(t, r)
		for _, fn := range []string{"ProxyFunction", "WorkerFunction"} {
			if got := env(t, r, fn)["MEDIA_PROXY_S3_LIFECYCLE_DAYS"]; got != strconv.Itoa(rule) {
				t.Errorf("%s MEDIA_PROXY_S3_LIFECYCLE_DAYS=%q, but the bucket deletes v1/ after %d days", fn, got, rule)
			}
		}
	}

	// GOMEMLIMIT is 80 % of every memory size a parameter allows.
	raw := rawTemplate(t)
	table := mapOf(mapOf(raw["Mappings"])["GoMemLimit"])
	for _, p := range []string{"ProxyMemorySize", "WorkerMemorySize"} {
		for _, v := range mapOf(mapOf(raw["Parameters"])[p])["AllowedValues"].([]any) {
			mb, _ := strconv.Atoi(fmt.Sprint(v))
			want := fmt.Sprintf("%dMiB", mb*8/10)
			if got := mapOf(table[fmt.Sprint(v)])["Value"]; got != want {
				t.Errorf("GoMemLimit[%v] = %v, want %s", v, got, want)
			}
		}
	}
	r = render(t, map[string]string{"ProxyMemorySize": "2048", "WorkerMemorySize": "3008"})
	if got := env(t, r, "ProxyFunction")["GOMEMLIMIT"]; got != "1638MiB" {
		t.Errorf("proxy at 2048 MB: GOMEMLIMIT=%q", got)
	}
	if got := env(t, r, "WorkerFunction")["GOMEMLIMIT"]; got != "2406MiB" {
		t.Errorf("worker at 3008 MB: GOMEMLIMIT=%q", got)
	}
	f := function(t, r, "ProxyFunction")
	if f.MemorySize == nil || *f.MemorySize != 2048 {
		t.Errorf("proxy memory %v, want 2048", f.MemorySize)
	}
}

// grants lists a role's Allow statements as "action resource" lines.
func grants(t *testing.T, role *iam.Role) []string {
	t.Helper()
	var out []string
	for _, p := range role.Policies {
		for _, s := range listOf(mapOf(p.PolicyDocument)["Statement"]) {
			st := mapOf(s)
			if st == nil {
				continue // an !If that resolved to AWS::NoValue
			}
			if st["Effect"] != "Allow" {
				t.Errorf("policy %s has a %v statement; only Allow is expected", p.PolicyName, st["Effect"])
			}
			if _, ok := st["NotAction"]; ok {
				t.Errorf("policy %s uses NotAction", p.PolicyName)
			}
			if _, ok := st["NotResource"]; ok {
				t.Errorf("policy %s uses NotResource", p.PolicyName)
			}
			for _, a := range listOf(st["Action"]) {
				for _, res := range listOf(st["Resource"]) {
					out = append(out, fmt.Sprint(a)+" "+fmt.Sprint(res))
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

func listOf(v any) []any {
	switch v := v.(type) {
	case []any:
		return v
	case nil:
		return nil
	default:
		return []any{v}
	}
}

func TestLeastPrivilege(t *testing.T) {
	bucket := attOf("MediaBucket", "Arn")
	queue := attOf("JobQueue", "Arn")
	// The store's keys: v1/<variant>/<hash> and failed/<variant>/<hash>.
	s3 := []string{"s3:ListBucket " + bucket} // so a HEAD on a missing key answers 404, not 403
	for _, action := range []string{"s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"} {
		for _, prefix := range []string{"v1/", "failed/"} {
			s3 = append(s3, action+" "+bucket+"/"+prefix+"*")
		}
	}
	logs := func(group string) []string {
		return []string{"logs:CreateLogStream " + attOf(group, "Arn"), "logs:PutLogEvents " + attOf(group, "Arn")}
	}
	sorted := func(parts ...[]string) []string {
		all := slices.Concat(parts...)
		sort.Strings(all)
		return all
	}
	cases := []struct {
		name   string
		params map[string]string
		role   string
		want   []string
	}{
		{"proxy", defaults(), "ProxyRole", sorted(s3, logs("ProxyLogGroup"), []string{"sqs:SendMessage " + queue})},
		{"proxy without worker", map[string]string{"EnableWorker": "false"}, "ProxyRole", sorted(s3, logs("ProxyLogGroup"))},
		// What the event source mapping calls; nothing changes visibility.
		{"worker", defaults(), "WorkerRole", sorted(s3, logs("WorkerLogGroup"), []string{
			"sqs:DeleteMessage " + queue,
			"sqs:GetQueueAttributes " + queue,
			"sqs:ReceiveMessage " + queue,
		})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := render(t, c.params)
			role, err := r.GetIAMRoleWithName(c.role)
			if err != nil {
				t.Fatal(err)
			}
			got := grants(t, role)
			if !slices.Equal(got, c.want) {
				t.Errorf("%s grants\n  %s\nwant exactly\n  %s", c.role, strings.Join(got, "\n  "), strings.Join(c.want, "\n  "))
			}
			for _, g := range got {
				action, resource, _ := strings.Cut(g, " ")
				if strings.Contains(action, "*") || resource == "*" {
					t.Errorf("%s grants a wildcard: %s", c.role, g)
				}
			}
			if len(role.ManagedPolicyArns) > 0 {
				t.Errorf("%s has managed policies %v; its log permissions are explicit", c.role, role.ManagedPolicyArns)
			}
			trust, _ := json.Marshal(role.AssumeRolePolicyDocument)
			if !strings.Contains(string(trust), `"Service":"lambda.amazonaws.com"`) || strings.Count(string(trust), `"Effect"`) != 1 {
				t.Errorf("%s trust policy %s, want lambda.amazonaws.com only", c.role, trust)
			}
		})
	}

	// Each function runs with its own role and logs to its own group.
	r := render(t, defaults())
	for fn, role := range map[string]string{"ProxyFunction": "ProxyRole", "WorkerFunction": "WorkerRole"} {
		f := function(t, r, fn)
		if f.Role != attOf(role, "Arn") {
			t.Errorf("%s role %q, want %s", fn, f.Role, attOf(role, "Arn"))
		}
		group := strings.TrimSuffix(role, "Role") + "LogGroup"
		if f.LoggingConfig == nil || str(f.LoggingConfig.LogGroup) != refOf(group) {
			t.Errorf("%s logs to %+v, want %s", fn, f.LoggingConfig, group)
		}
		lg, err := r.GetLogsLogGroupWithName(group)
		if err != nil {
			t.Fatal(err)
		}
		if lg.RetentionInDays == nil || *lg.RetentionInDays != 14 {
			t.Errorf("%s retention %v, want the default 14 days", group, lg.RetentionInDays)
		}
	}
}

// urlAccess lists who may call the Function URL and how, one line per
// permission: "principal action condition".
func urlAccess(t *testing.T, r rendered) []string {
	t.Helper()
	var out []string
	for name, p := range r.GetAllLambdaPermissionResources() {
		if p.FunctionName != refOf("ProxyFunction") {
			t.Errorf("permission %s on %q", name, p.FunctionName)
		}
		cond := "source " + str(p.SourceArn)
		switch p.Action {
		case "lambda:InvokeFunctionUrl":
			cond += " auth " + str(p.FunctionUrlAuthType)
		case "lambda:InvokeFunction":
			// goformation v7.14.9 does not model this property yet.
			props := mapOf(mapOf(mapOf(r.Raw["Resources"])[name])["Properties"])
			cond += fmt.Sprintf(" via-url %v", props["InvokedViaFunctionUrl"])
		}
		out = append(out, p.Principal+" "+p.Action+" "+cond)
	}
	sort.Strings(out)
	return out
}

// An instance runs one request at a time, and a miss too large to hold
// in memory is downloaded into a spool in /tmp (shared/spool), which the
// proxy fills to 90 %: the ephemeral storage holds the largest download,
// whether streamed (MEDIA_PROXY_LAMBDA_STREAM_LIMIT) or stored first
// (MEDIA_PROXY_MAX_SIZE).
func TestProxySpoolFits(t *testing.T) {
	r := render(t, defaults())
	f := function(t, r, "ProxyFunction")
	if f.EphemeralStorage == nil {
		t.Fatal("the proxy has no EphemeralStorage; /tmp holds its downloads")
	}
	room := int64(f.EphemeralStorage.Size) * 1000 * 1000
	room -= room / 10
	maxSize, err := strconv.ParseInt(env(t, r, "ProxyFunction")["MEDIA_PROXY_MAX_SIZE"], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if need := max(maxSize, configDefaults(t).LambdaStreamLimit); room < need {
		t.Errorf("/tmp of %d MB leaves %d bytes for a spool; the largest download is %d", f.EphemeralStorage.Size, room, need)
	}
}

func TestFunctionURL(t *testing.T) {
	// Behind CloudFront only this distribution may call the URL: anyone
	// else would skip the cache and run the function on the owner's bill.
	r := render(t, defaults())
	u, err := r.GetLambdaUrlWithName("ProxyUrl")
	if err != nil {
		t.Fatal(err)
	}
	if u.AuthType != "AWS_IAM" || str(u.InvokeMode) != "RESPONSE_STREAM" || u.TargetFunctionArn != attOf("ProxyFunction", "Arn") {
		t.Errorf("Function URL auth %q mode %q target %q", u.AuthType, str(u.InvokeMode), u.TargetFunctionArn)
	}
	distribution := "arn:aws:cloudfront::123456789012:distribution/" + refOf("Distribution")
	want := []string{ // both actions since October 2025
		"cloudfront.amazonaws.com lambda:InvokeFunction source " + distribution + " via-url true",
		"cloudfront.amazonaws.com lambda:InvokeFunctionUrl source " + distribution + " auth AWS_IAM",
	}
	if got := urlAccess(t, r); !slices.Equal(got, want) {
		t.Errorf("with CloudFront the URL may be called by\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	// The proxy sends its own CORS headers and answers OPTIONS; a Cors block
	// here would make Lambda add a second Access-Control-Allow-Origin.
	if u.Cors != nil {
		t.Errorf("Function URL has a Cors block %+v; the proxy's CORS headers would be duplicated", u.Cors)
	}
	if cfg := configDefaults(t); cfg.AllowOrigin != "*" || !strings.Contains(cfg.AllowMethods, "OPTIONS") {
		t.Errorf("the proxy's CORS (origin %q, methods %q) no longer allows GET, HEAD, OPTIONS from *", cfg.AllowOrigin, cfg.AllowMethods)
	}
	// Without CloudFront the URL is what Misskey calls: public.
	pub := render(t, map[string]string{"EnableCloudFront": "false"})
	if u, _ := pub.GetLambdaUrlWithName("ProxyUrl"); u.AuthType != "NONE" {
		t.Errorf("without CloudFront the Function URL's auth is %q, want NONE", u.AuthType)
	}
	want = []string{"* lambda:InvokeFunction source  via-url true", "* lambda:InvokeFunctionUrl source  auth NONE"}
	if got := urlAccess(t, pub); !slices.Equal(got, want) {
		t.Errorf("without CloudFront the URL may be called by\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	if f := function(t, r, "ProxyFunction"); f.ReservedConcurrentExecutions != nil {
		t.Errorf("reserved concurrency %d by default; 0 means no cap", *f.ReservedConcurrentExecutions)
	}
	r = render(t, map[string]string{"ProxyReservedConcurrency": "20"})
	if f := function(t, r, "ProxyFunction"); f.ReservedConcurrentExecutions == nil || *f.ReservedConcurrentExecutions != 20 {
		t.Errorf("reserved concurrency %v, want 20", f.ReservedConcurrentExecutions)
	}
}

func TestQueueAndWorker(t *testing.T) {
	r := render(t, defaults())
	q, err := r.GetSQSQueueWithName("JobQueue")
	if err != nil {
		t.Fatal(err)
	}
	redrive := mapOf(q.RedrivePolicy)
	if redrive["deadLetterTargetArn"] != attOf("DeadLetterQueue", "Arn") || fmt.Sprint(redrive["maxReceiveCount"]) != "5" {
		t.Errorf("redrive policy %v, want the dead-letter queue after 5 receives", redrive)
	}
	worker := function(t, r, "WorkerFunction")
	if q.VisibilityTimeout == nil || worker.Timeout == nil || *q.VisibilityTimeout < 6**worker.Timeout {
		t.Errorf("visibility timeout %v < 6 x worker timeout %v", q.VisibilityTimeout, worker.Timeout)
	}
	// The same for every timeout the parameter allows.
	raw := rawTemplate(t)
	for _, v := range mapOf(mapOf(raw["Parameters"])["WorkerTimeout"])["AllowedValues"].([]any) {
		secs, _ := strconv.Atoi(fmt.Sprint(v))
		got, _ := strconv.Atoi(fmt.Sprint(mapOf(mapOf(mapOf(raw["Mappings"])["QueueVisibility"])[fmt.Sprint(v)])["Seconds"]))
		if got < 6*secs || got > 43200 {
			t.Errorf("worker timeout %ds: visibility %ds, want at least %d (and SQS' maximum 43200)", secs, got, 6*secs)
		}
	}

	esm, err := r.GetLambdaEventSourceMappingWithName("WorkerEvents")
	if err != nil {
		t.Fatal(err)
	}
	if str(esm.EventSourceArn) != attOf("JobQueue", "Arn") || esm.FunctionName != refOf("WorkerFunction") {
		t.Errorf("event source %q -> %q", str(esm.EventSourceArn), esm.FunctionName)
	}
	if !slices.Equal(esm.FunctionResponseTypes, []string{"ReportBatchItemFailures"}) {
		t.Errorf("function response types %v, want ReportBatchItemFailures", esm.FunctionResponseTypes)
	}
	if esm.BatchSize == nil || *esm.BatchSize != 5 || esm.ScalingConfig == nil || esm.ScalingConfig.MaximumConcurrency == nil ||
		*esm.ScalingConfig.MaximumConcurrency != 2 {
		t.Errorf("batch size %v, scaling %+v; want the defaults 5 and 2", esm.BatchSize, esm.ScalingConfig)
	}
	r = render(t, map[string]string{"WorkerBatchSize": "10", "WorkerMaxConcurrency": "7"})
	esm, _ = r.GetLambdaEventSourceMappingWithName("WorkerEvents")
	if *esm.BatchSize != 10 || *esm.ScalingConfig.MaximumConcurrency != 7 {
		t.Errorf("batch size and concurrency do not follow their parameters")
	}

	r = render(t, map[string]string{"EnableWorker": "false"})
	for _, name := range []string{"WorkerFunction", "WorkerRole", "WorkerEvents", "JobQueue", "DeadLetterQueue", "DeadLetterAlarm", "WorkerLogGroup"} {
		if _, ok := r.Resources[name]; ok {
			t.Errorf("EnableWorker=false still creates %s", name)
		}
	}
	if _, ok := r.Outputs["QueueUrl"]; ok {
		t.Error("EnableWorker=false still outputs QueueUrl")
	}
}

func TestBucket(t *testing.T) {
	r := render(t, map[string]string{"VariantRetentionDays": "45"})
	b, err := r.GetS3BucketWithName("MediaBucket")
	if err != nil {
		t.Fatal(err)
	}
	pab := b.PublicAccessBlockConfiguration
	if pab == nil || pab.BlockPublicAcls == nil || !*pab.BlockPublicAcls || pab.BlockPublicPolicy == nil || !*pab.BlockPublicPolicy ||
		pab.IgnorePublicAcls == nil || !*pab.IgnorePublicAcls || pab.RestrictPublicBuckets == nil || !*pab.RestrictPublicBuckets {
		t.Errorf("public access block %+v, want everything blocked", pab)
	}
	if b.BucketEncryption == nil || len(b.BucketEncryption.ServerSideEncryptionConfiguration) != 1 ||
		b.BucketEncryption.ServerSideEncryptionConfiguration[0].ServerSideEncryptionByDefault.SSEAlgorithm != "AES256" {
		t.Errorf("encryption %+v, want SSE-S3", b.BucketEncryption)
	}
	rules := map[string]string{}
	for _, rule := range b.LifecycleConfiguration.Rules {
		if rule.Status != "Enabled" {
			continue
		}
		switch {
		case rule.ExpirationInDays != nil:
			rules["expire "+str(rule.Prefix)] = strconv.Itoa(*rule.ExpirationInDays)
		case rule.AbortIncompleteMultipartUpload != nil:
			rules["abort "+str(rule.Prefix)] = strconv.Itoa(rule.AbortIncompleteMultipartUpload.DaysAfterInitiation)
		}
	}
	want := map[string]string{"expire v1/": "45", "expire failed/": "1", "abort ": "1"}
	if fmt.Sprint(rules) != fmt.Sprint(want) {
		t.Errorf("lifecycle %v, want %v", rules, want)
	}
}

// variantExpiry is the days after which the bucket's lifecycle deletes
// variants.
func variantExpiry(t *testing.T, r rendered) int {
	t.Helper()
	b, err := r.GetS3BucketWithName("MediaBucket")
	if err != nil {
		t.Fatal(err)
	}
	for _, rule := range b.LifecycleConfiguration.Rules {
		if rule.Status == "Enabled" && str(rule.Prefix) == "v1/" && rule.ExpirationInDays != nil {
			return *rule.ExpirationInDays
		}
	}
	t.Fatal("no lifecycle rule expires v1/")
	return 0
}

func TestCloudFront(t *testing.T) {
	cfg := configDefaults(t)
	r := render(t, defaults())
	d, err := r.GetCloudFrontDistributionWithName("Distribution")
	if err != nil {
		t.Fatal(err)
	}
	dc := d.DistributionConfig
	origins := map[string]string{}
	for _, o := range dc.Origins {
		origins[o.Id] = o.DomainName
		if o.Id == "variants" && str(o.OriginAccessControlId) != attOf("VariantsOriginAccess", "Id") {
			t.Errorf("bucket origin without origin access control: %+v", o)
		}
		if o.Id != "proxy" {
			continue
		}
		// CloudFront signs its requests to the URL (AWS_IAM, see TestFunctionURL).
		if str(o.OriginAccessControlId) != attOf("ProxyOriginAccess", "Id") {
			t.Errorf("Function URL origin without origin access control: %+v", o)
		}
		// For a custom origin every attempt also retries a read timeout: a
		// slow miss would run up to three times. One attempt, and a wait
		// that ends before the function gives up (the most CloudFront
		// allows without a quota increase is 60 s), so the function still
		// stores the result for the next request.
		if o.ConnectionAttempts == nil || *o.ConnectionAttempts != 1 {
			t.Errorf("Function URL origin: ConnectionAttempts %v, want 1", o.ConnectionAttempts)
		}
		read := o.CustomOriginConfig.OriginReadTimeout
		timeout := mapOf(mapOf(rawTemplate(t)["Parameters"])["ProxyTimeout"])
		if read == nil || *read > 60 || fmt.Sprint(timeout["MinValue"]) != strconv.Itoa(*read) {
			t.Errorf("origin read timeout %v: want at most 60 s and the least ProxyTimeout allows (%v)", read, timeout["MinValue"])
		}
	}
	want := map[string]string{
		"proxy":    refOf("ProxyUrl") + ".lambda-url.us-east-1.on.aws",
		"variants": attOf("MediaBucket", "RegionalDomainName"),
	}
	if fmt.Sprint(origins) != fmt.Sprint(want) {
		t.Errorf("origins %v, want %v", origins, want)
	}

	def := dc.DefaultCacheBehavior
	if def.TargetOriginId != "proxy" || str(def.CachePolicyId) != refOf("ProxyCachePolicy") ||
		str(def.OriginRequestPolicyId) != refOf("ProxyOriginRequestPolicy") {
		t.Errorf("default behaviour %+v", def)
	}
	// The cache key and what reaches the function: exactly the query
	// parameters the proxy reads, so a cache buster (&x=1, &x=2, ...) is
	// answered from the edge's copy and never runs the function.
	cp, _ := r.GetCloudFrontCachePolicyWithName("ProxyCachePolicy")
	if qs := cp.CachePolicyConfig.ParametersInCacheKeyAndForwardedToOrigin.QueryStringsConfig; qs.QueryStringBehavior != "whitelist" || !slices.Equal(qs.QueryStrings, variant.QueryParameters) {
		t.Errorf("cache key query strings %s %v, want whitelist %v", qs.QueryStringBehavior, qs.QueryStrings, variant.QueryParameters)
	}
	orp, _ := r.GetCloudFrontOriginRequestPolicyWithName("ProxyOriginRequestPolicy")
	oc := orp.OriginRequestPolicyConfig
	if qs := oc.QueryStringsConfig; qs.QueryStringBehavior != "whitelist" || !slices.Equal(qs.QueryStrings, variant.QueryParameters) {
		t.Errorf("origin request query strings %s %v, want whitelist %v", qs.QueryStringBehavior, qs.QueryStrings, variant.QueryParameters)
	}
	// Forwarding Host makes the Function URL answer 403.
	hc := oc.HeadersConfig
	if hc.HeaderBehavior == "allViewer" || hc.HeaderBehavior == "allViewerAndWhitelistCloudFront" ||
		slices.ContainsFunc(hc.Headers, func(h string) bool { return strings.EqualFold(h, "host") }) {
		t.Errorf("origin request policy forwards Host: %+v", hc)
	}

	if len(dc.CacheBehaviors) != 1 {
		t.Fatalf("cache behaviours %+v, want one for v1/*", dc.CacheBehaviors)
	}
	v1 := dc.CacheBehaviors[0]
	if v1.PathPattern != "v1/*" || v1.TargetOriginId != "variants" || str(v1.ResponseHeadersPolicyId) != refOf("VariantHeadersPolicy") {
		t.Errorf("v1/* behaviour %+v", v1)
	}
	hp, _ := r.GetCloudFrontResponseHeadersPolicyWithName("VariantHeadersPolicy")
	hpc := hp.ResponseHeadersPolicyConfig
	if csp := hpc.SecurityHeadersConfig.ContentSecurityPolicy; csp == nil || csp.ContentSecurityPolicy != cfg.ContentSecurityPolicy || !csp.Override {
		t.Errorf("variant CSP %+v, want the proxy's %q", csp, cfg.ContentSecurityPolicy)
	}
	if c := hpc.CorsConfig; c == nil || !slices.Equal(c.AccessControlAllowOrigins.Items, []string{cfg.AllowOrigin}) || !c.OriginOverride {
		t.Errorf("variant CORS %+v, want origin %s", c, cfg.AllowOrigin)
	}

	// Only this distribution may read the bucket, and only variants.
	bp, _ := r.GetS3BucketPolicyWithName("MediaBucketPolicy")
	policy := jsonText(bp.PolicyDocument)
	for _, s := range []string{`"Service":"cloudfront.amazonaws.com"`, `"Resource":"<MediaBucket.Arn>/v1/*"`,
		`"AWS:SourceArn":"arn:aws:cloudfront::123456789012:distribution/<Distribution>"`} {
		if !strings.Contains(policy, s) {
			t.Errorf("bucket policy %s lacks %s", policy, s)
		}
	}

	for _, c := range []struct {
		name   string
		params map[string]string
		line   string
	}{
		{"CloudFront", defaults(), "mediaProxy: https://" + attOf("Distribution", "DomainName")},
		{"Function URL", map[string]string{"EnableCloudFront": "false"}, "mediaProxy: https://" + refOf("ProxyUrl") + ".lambda-url.us-east-1.on.aws"},
		{"custom domain", map[string]string{"DomainName": "media.example.com", "CertificateArn": "arn:aws:acm:us-east-1:1:certificate/x"}, "mediaProxy: https://media.example.com"},
	} {
		r := render(t, c.params)
		if got := r.Outputs["MisskeyConfigLine"].Value; got != c.line {
			t.Errorf("%s: MisskeyConfigLine %q, want %q", c.name, got, c.line)
		}
		_, hasDist := r.Resources["Distribution"]
		_, hasOutput := r.Outputs["CloudFrontDomain"]
		if hasDist != (c.name != "Function URL") || hasOutput != hasDist {
			t.Errorf("%s: distribution %v, CloudFrontDomain output %v", c.name, hasDist, hasOutput)
		}
	}
	oac := map[string]string{}
	for name, o := range r.GetAllCloudFrontOriginAccessControlResources() {
		oac[name] = o.OriginAccessControlConfig.OriginAccessControlOriginType
	}
	if want := map[string]string{"ProxyOriginAccess": "lambda", "VariantsOriginAccess": "s3"}; fmt.Sprint(oac) != fmt.Sprint(want) {
		t.Errorf("origin access controls %v, want %v", oac, want)
	}
	if _, ok := render(t, map[string]string{"EnableCloudFront": "false"}).Resources["ProxyOriginAccess"]; ok {
		t.Error("an origin access control without CloudFront")
	}

	r = render(t, map[string]string{"DomainName": "media.example.com", "CertificateArn": "arn:aws:acm:us-east-1:1:certificate/x"})
	d, _ = r.GetCloudFrontDistributionWithName("Distribution")
	if !slices.Equal(d.DistributionConfig.Aliases, []string{"media.example.com"}) || str(d.DistributionConfig.ViewerCertificate.SslSupportMethod) != "sni-only" {
		t.Errorf("custom domain: aliases %v, certificate %+v", d.DistributionConfig.Aliases, d.DistributionConfig.ViewerCertificate)
	}
}

// longestStackName is the longest stack name scripts/deploy accepts.
func longestStackName(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile("../scripts/deploy")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`\[\[ \$stack =~ \^\[A-Za-z\]\[-A-Za-z0-9\]\{0,(\d+)\}\$ \]\]`).FindSubmatch(src)
	if m == nil {
		t.Fatal("scripts/deploy no longer checks stack names as this test expects")
	}
	n, _ := strconv.Atoi(string(m[1]))
	return "s" + strings.Repeat("x", n)
}

// Named CloudFront resources must fit their limits for every stack name
// scripts/deploy accepts, or the first deployment fails.
func TestNamesFit(t *testing.T) {
	long := longestStackName(t)
	r := render(t, map[string]string{"AWS::StackName": long})
	type name struct {
		name  string
		limit int
	}
	var names []name
	for _, o := range r.GetAllCloudFrontOriginAccessControlResources() {
		names = append(names, name{o.OriginAccessControlConfig.Name, 64})
	}
	for _, p := range r.GetAllCloudFrontCachePolicyResources() {
		names = append(names, name{p.CachePolicyConfig.Name, 128}, name{str(p.CachePolicyConfig.Comment), 128})
	}
	for _, p := range r.GetAllCloudFrontOriginRequestPolicyResources() {
		names = append(names, name{p.OriginRequestPolicyConfig.Name, 128}, name{str(p.OriginRequestPolicyConfig.Comment), 128})
	}
	for _, p := range r.GetAllCloudFrontResponseHeadersPolicyResources() {
		names = append(names, name{p.ResponseHeadersPolicyConfig.Name, 128}, name{str(p.ResponseHeadersPolicyConfig.Comment), 128})
	}
	for _, d := range r.GetAllCloudFrontDistributionResources() {
		names = append(names, name{str(d.DistributionConfig.Comment), 128})
	}
	for _, d := range r.GetAllCloudWatchDashboardResources() {
		names = append(names, name{str(d.DashboardName), 255})
	}
	e := renderFile(t, edgeFile, map[string]string{"AWS::StackName": long + "-edge-ap-northeast-1", "ProxyStack": long + " (ap-northeast-1)", "PlanTier": "FREE"})
	for _, w := range e.GetAllWAFv2WebACLResources() {
		names = append(names, name{str(w.Name), 128}, name{str(w.Description), 256})
	}
	if len(names) != 12 {
		t.Errorf("found %d names, want 12: %v", len(names), names)
	}
	for _, n := range names {
		if len(n.name) > n.limit {
			t.Errorf("name %q has %d characters, over CloudFront's %d, for a stack name of %d", n.name, len(n.name), n.limit, len(long))
		}
	}
	// Origin access control names are unique per account: each stack's own.
	if r.Resources["ProxyOriginAccess"] == nil {
		t.Fatal("no ProxyOriginAccess")
	}
	if n, _ := r.GetCloudFrontOriginAccessControlWithName("ProxyOriginAccess"); !strings.Contains(n.OriginAccessControlConfig.Name, stackUUID) {
		t.Errorf("ProxyOriginAccess name %q does not name the stack", n.OriginAccessControlConfig.Name)
	}
}

func TestObservability(t *testing.T) {
	r := render(t, map[string]string{"AlarmEmail": "admin@example.com"})
	a, err := r.GetCloudWatchAlarmWithName("DeadLetterAlarm")
	if err != nil {
		t.Fatal(err)
	}
	if str(a.Namespace) != "AWS/SQS" || str(a.MetricName) != "ApproximateNumberOfMessagesVisible" || a.Threshold == nil || *a.Threshold != 0 ||
		a.ComparisonOperator != "GreaterThanThreshold" || len(a.Dimensions) != 1 || a.Dimensions[0].Value != attOf("DeadLetterQueue", "QueueName") {
		t.Errorf("dead-letter alarm %+v", a)
	}
	if !slices.Equal(a.AlarmActions, []string{refOf("AlarmTopic")}) {
		t.Errorf("alarm actions %v, want the e-mail topic", a.AlarmActions)
	}
	topic, err := r.GetSNSTopicWithName("AlarmTopic")
	if err != nil || len(topic.Subscription) != 1 || topic.Subscription[0].Endpoint != "admin@example.com" {
		t.Errorf("alarm topic %+v, %v", topic, err)
	}
	if _, ok := render(t, defaults()).Resources["AlarmTopic"]; ok {
		t.Error("an alarm topic without AlarmEmail")
	}

	// The cap at work: any throttle of the proxy in 5 minutes, mailed.
	th, err := r.GetCloudWatchAlarmWithName("ThrottleAlarm")
	if err != nil {
		t.Fatal(err)
	}
	if str(th.Namespace) != "AWS/Lambda" || str(th.MetricName) != "Throttles" || str(th.Statistic) != "Sum" ||
		th.Period == nil || *th.Period != 300 || th.EvaluationPeriods != 1 || th.Threshold == nil || *th.Threshold != 0 ||
		th.ComparisonOperator != "GreaterThanThreshold" || jsonText(th.Dimensions) != `[{"Name":"FunctionName","Value":"<ProxyFunction>"}]` ||
		str(th.TreatMissingData) != "notBreaching" {
		t.Errorf("throttle alarm %+v", th)
	}
	if !slices.Equal(th.AlarmActions, []string{refOf("AlarmTopic")}) {
		t.Errorf("throttle alarm actions %v, want the e-mail topic", th.AlarmActions)
	}

	// The bill's early warning: the proxy's invocation rate, per hour over
	// 5 minutes, against a parameter.
	for _, c := range []struct {
		params  map[string]string
		limit   float64
		actions []string
	}{
		{defaults(), 20000, nil},
		{map[string]string{"InvocationAlarmPerHour": "5000", "AlarmEmail": "admin@example.com", "EnableWorker": "false"}, 5000, []string{refOf("AlarmTopic")}},
	} {
		r := render(t, c.params)
		a, err := r.GetCloudWatchAlarmWithName("InvocationAlarm")
		if err != nil {
			t.Fatal(err)
		}
		var stat, expr string
		for _, m := range a.Metrics {
			if m.MetricStat != nil {
				ms := m.MetricStat
				stat = fmt.Sprintf("%s %s %s %d %s %s", m.Id, str(ms.Metric.Namespace), str(ms.Metric.MetricName), ms.Period, ms.Stat, jsonText(ms.Metric.Dimensions))
			} else if m.ReturnData == nil || *m.ReturnData {
				expr = str(m.Expression)
			}
		}
		if want := `invocations AWS/Lambda Invocations 300 Sum [{"Name":"FunctionName","Value":"<ProxyFunction>"}]`; stat != want {
			t.Errorf("invocation alarm reads %q, want %q", stat, want)
		}
		if expr != "invocations * 12" || a.Threshold == nil || *a.Threshold != c.limit || a.ComparisonOperator != "GreaterThanThreshold" {
			t.Errorf("invocation alarm: %q > %v (%s), want invocations * 12 > %v", expr, a.Threshold, a.ComparisonOperator, c.limit)
		}
		if !slices.Equal(a.AlarmActions, c.actions) {
			t.Errorf("invocation alarm actions %v, want %v", a.AlarmActions, c.actions)
		}
	}

	// An optional account-wide budget mails at 80 % spent and 100 % forecast.
	for params, want := range map[string]bool{
		"":             false,
		"email":        false,
		"budget":       false,
		"email+budget": true,
	} {
		p := map[string]string{}
		if strings.Contains(params, "email") {
			p["AlarmEmail"] = "admin@example.com"
		}
		if strings.Contains(params, "budget") {
			p["MonthlyBudget"] = "25"
		}
		b, err := render(t, p).GetBudgetsBudgetWithName("Budget")
		if (err == nil) != want {
			t.Errorf("%q: budget %v, want %v", params, err == nil, want)
		}
		if err != nil {
			continue
		}
		var notes []string
		for _, n := range b.NotificationsWithSubscribers {
			notes = append(notes, fmt.Sprintf("%s %s %v %s %s", n.Notification.NotificationType, n.Notification.ComparisonOperator,
				n.Notification.Threshold, str(n.Notification.ThresholdType), jsonText(n.Subscribers)))
		}
		sub := `[{"Address":"admin@example.com","SubscriptionType":"EMAIL"}]`
		wantNotes := []string{"ACTUAL GREATER_THAN 80 PERCENTAGE " + sub, "FORECASTED GREATER_THAN 100 PERCENTAGE " + sub}
		if b.Budget.BudgetType != "COST" || b.Budget.TimeUnit != "MONTHLY" || b.Budget.BudgetLimit == nil ||
			b.Budget.BudgetLimit.Amount != 25 || b.Budget.BudgetLimit.Unit != "USD" || !slices.Equal(notes, wantNotes) {
			t.Errorf("budget %+v, notifications %q", b.Budget, notes)
		}
	}

	dash, err := r.GetCloudWatchDashboardWithName("Dashboard")
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Widgets []struct {
			Type       string
			Properties struct {
				Metrics [][]any
				Query   string
			}
		}
	}
	if err := json.Unmarshal([]byte(dash.DashboardBody), &body); err != nil {
		t.Fatalf("dashboard body is not JSON: %v\n%s", err, dash.DashboardBody)
	}
	var rows, queries []string
	for _, w := range body.Widgets {
		for _, m := range w.Properties.Metrics {
			rows = append(rows, jsonText(m))
		}
		if w.Type == "log" {
			queries = append(queries, w.Properties.Query)
		}
	}
	all := strings.Join(rows, "\n")
	for _, want := range []string{
		`["AWS/Lambda","Invocations","FunctionName","<ProxyFunction>"]`,
		`[".","Errors",".","."]`,
		`[".","Throttles",".","."]`,
		`"Duration","FunctionName","<ProxyFunction>",{"label":"p50","stat":"p50"}]`,
		`["...",{"label":"p99","stat":"p99"}]`,
		`["AWS/Lambda","Invocations","FunctionName","<WorkerFunction>"`,
		`"QueueName","<DeadLetterQueue.QueueName>"`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("dashboard lacks %s", want)
		}
	}
	// What the request lines say, without a custom metric: read from the
	// log groups with Logs Insights, by the fields the code logs.
	logs := strings.Join(queries, "\n")
	for _, want := range []string{
		`SOURCE '<ProxyLogGroup>' | filter msg = "request" and ispresent(cache) | stats count(*) by cache, bin(5m)`,
		`status >= 400 | stats count(*) by status, bin(5m)`,
		`pct(fetch_ms, 99)`, `pct(transform_ms, 99)`, `sum(bytes_out)`,
		`stats count(*) as requests by url, variant, status | sort requests desc`,
		`SOURCE '<WorkerLogGroup>' | filter msg = "job" | stats count(*) by outcome, bin(5m)`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("dashboard lacks the query %s", want)
		}
	}
	if strings.Contains(dash.DashboardBody, "MisskeyMediaProxy") {
		t.Error("the dashboard reads custom metrics, which the default (Metrics=none) does not make")
	}
	// Without the worker the dashboard must not reference it.
	r = render(t, map[string]string{"EnableWorker": "false"})
	dash, _ = r.GetCloudWatchDashboardWithName("Dashboard")
	if strings.Contains(dash.DashboardBody, "<Worker") || strings.Contains(dash.DashboardBody, "<DeadLetter") {
		t.Error("dashboard references the worker that EnableWorker=false removes")
	}
}

func TestOutputs(t *testing.T) {
	r := render(t, defaults())
	for name, want := range map[string]string{
		"FunctionUrl":      functionURLOf("ProxyUrl"),
		"CloudFrontDomain": attOf("Distribution", "DomainName"),
		"BucketName":       refOf("MediaBucket"),
		"QueueUrl":         refOf("JobQueue"),
	} {
		if got := r.Outputs[name].Value; got != want {
			t.Errorf("output %s = %v, want %s", name, got, want)
		}
	}
}

// TestNoDependencyCycles follows Ref, Fn::GetAtt, Fn::Sub and DependsOn
// between resources: CloudFormation rejects a cycle only when deploying.
func TestNoDependencyCycles(t *testing.T) {
	raw := rawTemplate(t)
	resources := mapOf(raw["Resources"])
	params := mapOf(raw["Parameters"])
	edges := map[string][]string{}
	subVar := regexp.MustCompile(`\$\{([^!][^}.]*)(\.[^}]*)?\}`)
	var walk func(from string, v any)
	add := func(from, to string) {
		if _, ok := resources[to]; ok {
			edges[from] = append(edges[from], to)
			return
		}
		if _, ok := params[to]; !ok && !strings.HasPrefix(to, "AWS::") {
			t.Errorf("%s references %s, which is neither a resource nor a parameter", from, to)
		}
	}
	walk = func(from string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				switch k {
				case "Ref":
					add(from, fmt.Sprint(x))
				case "Fn::GetAtt":
					target := fmt.Sprint(x)
					if l, ok := x.([]any); ok {
						target = fmt.Sprint(l[0])
					}
					add(from, strings.SplitN(target, ".", 2)[0])
				case "Fn::Sub":
					src, vars := x, map[string]any{}
					if l, ok := x.([]any); ok {
						src, vars = l[0], mapOf(l[1])
						walk(from, l[1])
					}
					for _, m := range subVar.FindAllStringSubmatch(fmt.Sprint(src), -1) {
						if _, local := vars[m[1]]; !local {
							add(from, m[1])
						}
					}
					continue
				}
				walk(from, x)
			}
		case []any:
			for _, x := range v {
				walk(from, x)
			}
		}
	}
	for name, r := range resources {
		walk(name, mapOf(r)["Properties"])
		for _, d := range listOf(mapOf(r)["DependsOn"]) {
			add(name, fmt.Sprint(d))
		}
	}

	const (
		unseen = iota
		active
		done
	)
	state := map[string]int{}
	var path []string
	var visit func(n string)
	visit = func(n string) {
		switch state[n] {
		case active:
			i := slices.Index(path, n)
			t.Fatalf("dependency cycle: %s -> %s", strings.Join(path[i:], " -> "), n)
		case done:
			return
		}
		state[n] = active
		path = append(path, n)
		for _, m := range edges[n] {
			visit(m)
		}
		path = path[:len(path)-1]
		state[n] = done
	}
	names := make([]string, 0, len(resources))
	for n := range resources {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		visit(n)
	}
	// The case the template is built around: the function must not learn
	// the distribution's domain from the distribution.
	if slices.Contains(edges["ProxyFunction"], "Distribution") {
		t.Error("ProxyFunction references Distribution")
	}
}

// accountWideNames are the resource types whose names are unique in the
// account, not in the region, and the property holding the name (JSON
// path below Properties). A stack of the same name in another region must
// not collide with them (CachePolicyAlreadyExists), nor delete them
// (dashboards are global), so a name set there carries the stack's id or
// its region.
var accountWideNames = map[string]string{
	"AWS::CloudFront::CachePolicy":           "CachePolicyConfig.Name",
	"AWS::CloudFront::OriginRequestPolicy":   "OriginRequestPolicyConfig.Name",
	"AWS::CloudFront::ResponseHeadersPolicy": "ResponseHeadersPolicyConfig.Name",
	"AWS::CloudFront::OriginAccessControl":   "OriginAccessControlConfig.Name",
	"AWS::CloudFront::Distribution":          "", // unnamed
	"AWS::CloudWatch::Dashboard":             "DashboardName",
	"AWS::CloudWatch::Alarm":                 "AlarmName", // regional, but a set name would need the same care
	"AWS::Budgets::Budget":                   "Budget.BudgetName",
	"AWS::IAM::Role":                         "RoleName",
	"AWS::S3::Bucket":                        "BucketName",
	"AWS::SNS::Topic":                        "TopicName",
	"AWS::WAFv2::WebACL":                     "Name", // CLOUDFRONT scope: one namespace for the account
	"AWS::PricingPlanManager::Subscription":  "",
}

// regionalNames are the types whose names need only be unique in the
// region, which a stack's name already is.
var regionalNames = []string{
	"AWS::Logs::LogGroup", "AWS::Lambda::Function", "AWS::Lambda::Url", "AWS::Lambda::Permission",
	"AWS::Lambda::EventSourceMapping", "AWS::SQS::Queue", "AWS::S3::BucketPolicy",
}

func TestAccountUniqueNames(t *testing.T) {
	for _, c := range []struct {
		file   string
		params map[string]string
	}{
		{templateFile, map[string]string{"AlarmEmail": "a@example.com", "MonthlyBudget": "30"}},
		{edgeFile, map[string]string{"ProxyStack": "misskey-media-proxy (us-east-1)", "PlanTier": "FREE", "DistributionArn": "arn:aws:cloudfront::123456789012:distribution/E1"}},
	} {
		r := renderFile(t, c.file, c.params)
		checked := 0
		for name, res := range mapOf(r.Raw["Resources"]) {
			typ := fmt.Sprint(mapOf(res)["Type"])
			path, global := accountWideNames[typ]
			if !global {
				if !slices.Contains(regionalNames, typ) {
					t.Errorf("%s: %s is of type %s, which neither list names: decide whether its name is unique in the account", c.file, name, typ)
				}
				continue
			}
			if path == "" {
				continue
			}
			v := any(mapOf(res)["Properties"])
			for _, k := range strings.Split(path, ".") {
				v = mapOf(v)[k]
			}
			if v == nil {
				continue // CloudFormation makes a unique name
			}
			checked++
			if s := fmt.Sprint(v); !strings.Contains(s, stackUUID) && !strings.Contains(s, "us-east-1") {
				t.Errorf("%s: %s's %s %q carries neither the stack's id nor its region", c.file, name, path, s)
			}
		}
		if checked == 0 {
			t.Errorf("%s: no account-wide name checked", c.file)
		}
	}
}

// TestRules: the template refuses what CloudFormation would otherwise
// accept and quietly ignore or get wrong.
func TestRules(t *testing.T) {
	for _, c := range []struct {
		params map[string]string
		want   string // part of the refusal, "" for none
	}{
		{map[string]string{"DomainName": "media.example.com"}, "DomainName needs CertificateArn"},
		{map[string]string{"DomainName": "media.example.com", "CertificateArn": "arn:aws:acm:us-east-1:1:certificate/x"}, ""},
		{map[string]string{"PricingPlan": "free"}, "needs the edge stack's WebAclArn"},
		{map[string]string{"PricingPlan": "pro", "WebAclArn": "arn:aws:wafv2:us-east-1:1:global/webacl/x/y", "EnableCloudFront": "false"}, "needs EnableCloudFront=true"},
		{map[string]string{"PricingPlan": "pro", "WebAclArn": "arn:aws:wafv2:us-east-1:1:global/webacl/x/y"}, ""},
		{map[string]string{"ProxyConcurrencyCap": "off", "ProxyReservedConcurrency": "20"}, "reserves no concurrency"},
		{map[string]string{"ProxyConcurrencyCap": "off"}, ""},
		{map[string]string{"ProxyConcurrencyCap": "50", "ProxyReservedConcurrency": "50"}, ""},
	} {
		got := strings.Join(refusals(t, templateFile, c.params), "; ")
		if c.want == "" && got != "" || !strings.Contains(got, c.want) {
			t.Errorf("%v: refused %q, want %q", c.params, got, c.want)
		}
	}
	// With a plan, the distribution names the edge stack's web ACL.
	r := render(t, map[string]string{"PricingPlan": "free", "WebAclArn": "arn:aws:wafv2:us-east-1:1:global/webacl/x/y"})
	if d, _ := r.GetCloudFrontDistributionWithName("Distribution"); str(d.DistributionConfig.WebACLId) != "arn:aws:wafv2:us-east-1:1:global/webacl/x/y" {
		t.Errorf("with a plan: WebACLId %q", str(d.DistributionConfig.WebACLId))
	}
	if d, _ := render(t, defaults()).GetCloudFrontDistributionWithName("Distribution"); d.DistributionConfig.WebACLId != nil {
		t.Errorf("pay-as-you-go: WebACLId %q, want none (AWS WAF is billed apart)", *d.DistributionConfig.WebACLId)
	}
	if got := render(t, defaults()).Outputs["DistributionArn"].Value; got != "arn:aws:cloudfront::123456789012:distribution/"+refOf("Distribution") {
		t.Errorf("DistributionArn output %v", got)
	}
}

// TestEdgeStack: the flat-rate plan's stack. Its web ACL's one rule limits
// each address's requests to the function (not to stored variants, v1/*,
// which cost no invocation), and its subscription, made once the
// distribution exists, covers both as the plan requires.
func TestEdgeStack(t *testing.T) {
	dist := "arn:aws:cloudfront::123456789012:distribution/E1"
	first := renderFile(t, edgeFile, map[string]string{"ProxyStack": "p (ap-northeast-1)", "PlanTier": "FREE"})
	if _, ok := mapOf(first.Raw["Resources"])["Subscription"]; ok {
		t.Error("a subscription without a distribution (the first pass)")
	}
	r := renderFile(t, edgeFile, map[string]string{"ProxyStack": "p (ap-northeast-1)", "PlanTier": "PRO", "DistributionArn": dist, "RateLimit": "1200"})
	acl, err := r.GetWAFv2WebACLWithName("WebAcl")
	if err != nil {
		t.Fatal(err)
	}
	if acl.Scope != "CLOUDFRONT" || acl.DefaultAction.Allow == nil || len(acl.Rules) != 1 {
		t.Fatalf("web ACL %s, default %+v, %d rules; want CLOUDFRONT, allow, one rule", acl.Scope, acl.DefaultAction, len(acl.Rules))
	}
	rule := acl.Rules[0]
	rb := rule.Statement.RateBasedStatement
	if rb == nil || rb.Limit != 1200 || rb.AggregateKeyType != "IP" || rule.Action == nil || rule.Action.Block == nil {
		t.Fatalf("rule %s: %+v, action %+v; want a rate-based block of 1200 per IP", rule.Name, rb, rule.Action)
	}
	if cr := rule.Action.Block.CustomResponse; cr == nil || cr.ResponseCode != 429 {
		t.Errorf("blocked requests get %+v, want 429", cr)
	}
	scope := jsonText(rb.ScopeDownStatement)
	if !strings.Contains(scope, `"NotStatement"`) || !strings.Contains(scope, `"SearchString":"/v1/"`) || !strings.Contains(scope, `"PositionalConstraint":"STARTS_WITH"`) {
		t.Errorf("the rule's scope %s, want every path but /v1/*", scope)
	}

	sub := mapOf(mapOf(mapOf(r.Raw["Resources"])["Subscription"])["Properties"])
	if sub["PlanTier"] != "PRO" || sub["PlanFamily"] != "CloudFront" || jsonText(sub["ResourceArns"]) != `["`+dist+`","<WebAcl.Arn>"]` {
		t.Errorf("subscription %v", sub)
	}
	// cfn-lint 1.51 knows the type only through infra/schemas, and does
	// not check the properties of types it learns that way: this does.
	var schema struct {
		Properties map[string]struct {
			Enum     []string
			MinItems int
			MaxItems int
		}
		Required           []string
		ReadOnlyProperties []string
	}
	raw, err := os.ReadFile(schemasDir + "/aws-pricingplanmanager-subscription.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	for _, req := range schema.Required {
		if sub[req] == nil {
			t.Errorf("subscription lacks %s", req)
		}
	}
	for k, v := range sub {
		p, ok := schema.Properties[k]
		if !ok || slices.Contains(schema.ReadOnlyProperties, "/properties/"+k) {
			t.Errorf("subscription sets %s, which the type does not take", k)
			continue
		}
		if len(p.Enum) > 0 && !slices.Contains(p.Enum, fmt.Sprint(v)) {
			t.Errorf("subscription %s=%v, want one of %v", k, v, p.Enum)
		}
		if l, ok := v.([]any); ok && (len(l) < p.MinItems || p.MaxItems > 0 && len(l) > p.MaxItems) {
			t.Errorf("subscription %s has %d items", k, len(l))
		}
	}
	// The main template's plan names match the edge stack's tiers.
	tiers := listOf(mapOf(mapOf(rawTemplateOf(t, edgeFile)["Parameters"])["PlanTier"])["AllowedValues"])
	plans := listOf(mapOf(mapOf(rawTemplate(t)["Parameters"])["PricingPlan"])["AllowedValues"])
	var want []string
	for _, p := range plans {
		if p != "none" {
			want = append(want, strings.ToUpper(fmt.Sprint(p)))
		}
	}
	if fmt.Sprint(tiers) != fmt.Sprint(want) {
		t.Errorf("edge stack tiers %v, template plans %v", tiers, plans)
	}
}
