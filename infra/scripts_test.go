package infra

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The deploy and destroy scripts run here against a stand-in `aws` that
// records its arguments and answers like the real CLI would, and a
// stand-in `curl` for deploy's health check. No AWS account is reachable
// from the tests. The stand-ins keep their state in FAKE_STATE; the FAKE_*
// variables describe the account and the stack:
//
//	FAKE_STACK_STATUS  the stack's status (once deployed); default UPDATE_COMPLETE
//	FAKE_RESOURCES     describe-stack-resources' rows (logical id, type,
//	                   status, physical id); default a live bucket and functions
//	FAKE_ACCOUNT       get-account-settings: "<quota>\t<unreserved>"; "" fails
//	FAKE_RESERVED      the stack's ProxyReservedConcurrency
//	FAKE_NO_CDN        set: the stack has no CloudFront
//	FAKE_WAIT_FAILS    how many stack-delete waits end in DELETE_FAILED
//	FAKE_CURL_FAILS    set: the health check fails
//	FAKE_URL_MODE      the Function URL's invoke mode; default RESPONSE_STREAM
const fakeAWS = `#!/bin/bash
echo "$*" >>"$FAKE_STATE/calls"
args="$*"
case $args in
  *"configure get region"*) exit 1 ;;
  *"sts get-caller-identity"*) echo 123456789012 ;;
  *"cloudformation describe-stacks"*)
    [ -f "$FAKE_STATE/deployed" ] || { echo "Stack with id x does not exist" >&2; exit 255; }
    status=$(cat "$FAKE_STATE/status" 2>/dev/null || echo "${FAKE_STACK_STATUS:-UPDATE_COMPLETE}")
    case $args in
      *"StackStatus,StackStatusReason"*) printf '%s\tThe following resource(s) failed to delete: [MediaBucket].\n' "$status" ;;
      *StackStatus*) echo "$status" ;;
      *"Parameters[].[ParameterKey,ParameterValue]"*) printf 'ArtifactBucket\tmy-artifacts\nProxyTimeout\t1\nWorkerTimeout\t1\nImageUri\t\n' ;;
      *"ParameterKey=='Architecture'"*) echo arm64 ;;
      *"ParameterKey=='ProxyReservedConcurrency'"*) echo "${FAKE_RESERVED:-None}" ;;
      *"OutputKey=='CloudFrontDomain'"*) if [ -n "$FAKE_NO_CDN" ]; then echo None; else echo d123.cloudfront.net; fi ;;
      *"OutputKey=='FunctionUrl'"*) echo "https://abc.lambda-url.eu-west-1.on.aws/" ;;
      *"OutputKey=='MisskeyConfigLine'"*) echo "mediaProxy: https://d123.cloudfront.net" ;;
      *"Outputs[].[OutputKey,OutputValue]"*) printf 'CloudFrontDomain\td123.cloudfront.net\n' ;;
      *) echo None ;;
    esac ;;
  *"describe-stack-resource "*)
    case $args in
      *"--logical-resource-id ProxyFunction "*) echo stack-ProxyFunction-1 ;;
      *"--logical-resource-id Distribution "*) if [ -n "$FAKE_NO_CDN" ]; then echo None; else echo E2DIST; fi ;;
      *) echo None ;;
    esac ;;
  *"lambda get-function-url-config"*) echo "${FAKE_URL_MODE:-RESPONSE_STREAM}" ;;
  *"describe-stack-resources"*)
    printf '%b' "${FAKE_RESOURCES-MediaBucket\tAWS::S3::Bucket\tCREATE_COMPLETE\tvariants-bucket\nProxyFunction\tAWS::Lambda::Function\tUPDATE_COMPLETE\tstack-ProxyFunction-1\nWorkerFunction\tAWS::Lambda::Function\tUPDATE_COMPLETE\tstack-WorkerFunction-2\n}" ;;
  *"lambda get-account-settings"*)
    [ -n "$FAKE_ACCOUNT" ] || { echo "AccessDeniedException" >&2; exit 254; }
    printf '%b\n' "$FAKE_ACCOUNT" ;;
  *"lambda put-function-concurrency"*"-gone"*) echo "ResourceNotFoundException: Function not found" >&2; exit 254 ;;
  *"s3api head-bucket"* | *"s3api head-object"*) [ -f "$FAKE_STATE/deployed" ] || exit 254 ;;
  *"cloudformation deploy"*) touch "$FAKE_STATE/deployed" ;;
  *"cloudformation wait stack-delete-complete"*)
    fails=$(cat "$FAKE_STATE/wait-fails" 2>/dev/null || echo "${FAKE_WAIT_FAILS:-0}")
    if [ "$fails" -gt 0 ]; then
      echo $((fails - 1)) >"$FAKE_STATE/wait-fails"
      echo DELETE_FAILED >"$FAKE_STATE/status"
      echo "Waiter StackDeleteComplete failed: Waiter encountered a terminal failure state" >&2
      exit 255
    fi ;;
esac
exit 0
`

const fakeCurl = `#!/bin/bash
echo "$*" >>"$FAKE_STATE/curl"
[ -z "$FAKE_CURL_FAILS" ] || exit 22
`

type scriptRun struct {
	out   string
	calls []string // what the stand-in aws was asked, one line each
	curl  []string // and curl
	err   error
}

// runScript runs root/scripts/<name> with the stand-ins first in PATH and
// no AWS configuration in the environment.
func runScript(t *testing.T, root, state string, extraEnv []string, name string, args ...string) scriptRun {
	t.Helper()
	run := tryScript(t, root, state, extraEnv, name, args...)
	if run.err != nil {
		t.Fatalf("scripts/%s %v: %v\n%s", name, args, run.err, run.out)
	}
	return run
}

// tryScript is runScript for runs that may fail.
func tryScript(t *testing.T, root, state string, extraEnv []string, name string, args ...string) scriptRun {
	t.Helper()
	bin := t.TempDir()
	for file, text := range map[string]string{"aws": fakeAWS, "curl": fakeCurl} {
		if err := os.WriteFile(filepath.Join(bin, file), []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("bash", append([]string{filepath.Join(root, "scripts", name)}, args...)...)
	cmd.Env = append([]string{
		"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH"),
		"HOME=" + t.TempDir(),
		"FAKE_STATE=" + state,
		"FAKE_ACCOUNT=1000\t1000",
	}, extraEnv...)
	out, err := cmd.CombinedOutput()
	lines := func(file string) []string {
		b, _ := os.ReadFile(filepath.Join(state, file))
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
	return scriptRun{out: string(out), calls: lines("calls"), curl: lines("curl"), err: err}
}

// fakeCheckout is a copy of the scripts and the template with stand-in
// artifacts, so that a deployment runs without scripts/package's build.
func fakeCheckout(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	if out, err := exec.Command("cp", "-r", filepath.Join("..", "scripts"), root).CombinedOutput(); err != nil {
		t.Fatalf("copy scripts: %v\n%s", err, out)
	}
	for _, dir := range []string{"infra", "functions/proxy", "functions/worker", "dist/arm64"} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tmpl, err := os.ReadFile(templateFile)
	if err != nil {
		t.Fatal(err)
	}
	for file, data := range map[string][]byte{
		"infra/template.yaml":   tmpl,
		"dist/arm64/proxy.zip":  []byte("proxy zip"),
		"dist/arm64/worker.zip": []byte("worker zip"),
	} {
		if err := os.WriteFile(filepath.Join(root, file), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// deployed marks the stand-in's stack as existing.
func deployed(t *testing.T) string {
	t.Helper()
	state := t.TempDir()
	if err := os.WriteFile(filepath.Join(state, "deployed"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return state
}

// called lists the calls that contain part.
func (r scriptRun) called(part string) []string {
	var out []string
	for _, c := range r.calls {
		if strings.Contains(c, part) {
			out = append(out, c)
		}
	}
	return out
}

// printedParameters reads the Key=Value lines scripts/deploy prints.
func printedParameters(t *testing.T, out string) map[string]string {
	t.Helper()
	_, block, ok := strings.Cut(out, "deploy: parameters")
	if !ok {
		t.Fatalf("scripts/deploy printed no parameters:\n%s", out)
	}
	params := map[string]string{}
	for _, line := range strings.Split(block, "\n")[1:] {
		if !strings.HasPrefix(line, "  ") {
			break
		}
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		params[k] = v
	}
	return params
}

func TestDeployDryRun(t *testing.T) {
	state := t.TempDir()
	run := runScript(t, "..", state, nil, "deploy", "--dry-run", "--skip-package", "--stack-name", "test-stack",
		"--region", "ap-northeast-1", "--param", "AlarmEmail=ops@example.com", "--param", "EnableCloudFront=false")
	if run.calls[0] != "" {
		t.Errorf("a dry run called aws: %q", run.calls)
	}
	for _, want := range []string{
		"+ aws sts get-caller-identity",
		`+ aws s3api create-bucket --bucket misskey-media-proxy-\<account-id\>-ap-northeast-1 --create-bucket-configuration LocationConstraint=ap-northeast-1`,
		"+ aws s3 cp --only-show-errors ",
		"+ aws lambda get-account-settings ",
		"a real run sets ProxyReservedConcurrency=20 when the account can spare it",
		"+ aws cloudformation deploy --stack-name test-stack --template-file ",
		"--capabilities CAPABILITY_IAM --no-fail-on-empty-changeset --parameter-overrides Architecture=arm64 ",
		"mediaProxy: ",
	} {
		if !strings.Contains(run.out, want) {
			t.Errorf("the dry run does not print %q:\n%s", want, run.out)
		}
	}
	params := printedParameters(t, run.out)
	for k, want := range map[string]string{"Architecture": "arm64", "AlarmEmail": "ops@example.com", "EnableCloudFront": "false", "EnableWorker": "true"} {
		if params[k] != want {
			t.Errorf("parameter %s=%q, want %q", k, params[k], want)
		}
	}
	if !strings.HasPrefix(params["ProxyCodeKey"], "test-stack/arm64/proxy-") {
		t.Errorf("ProxyCodeKey %q", params["ProxyCodeKey"])
	}
	// Every parameter it passes is one the template declares and accepts.
	r := render(t, params)
	if str(function(t, r, "ProxyFunction").Code.S3Key) != params["ProxyCodeKey"] {
		t.Error("the rendered function does not use the uploaded proxy artifact")
	}
}

func TestDeploySetsPublicBaseURLOnNewStack(t *testing.T) {
	root := fakeCheckout(t)
	state := t.TempDir()
	run := runScript(t, root, state, nil, "deploy", "--skip-package", "--region", "eu-west-1")
	var deploys []string
	for _, c := range run.calls {
		if !strings.HasPrefix(c, "--region eu-west-1 ") && !strings.HasPrefix(c, "configure ") {
			t.Errorf("call without the region: %q", c)
		}
		if strings.Contains(c, "cloudformation deploy") {
			deploys = append(deploys, c)
		}
	}
	// New stack: a first pass, then one that points redirects at CloudFront.
	if len(deploys) != 2 || !slices.Contains(strings.Fields(deploys[0]), "PublicBaseUrl=") ||
		!slices.Contains(strings.Fields(deploys[1]), "PublicBaseUrl=https://d123.cloudfront.net") {
		t.Fatalf("deploy calls on a new stack:\n%s", strings.Join(deploys, "\n"))
	}
	for _, want := range []string{"s3api create-bucket --bucket misskey-media-proxy-123456789012-eu-west-1 --create-bucket-configuration LocationConstraint=eu-west-1", "s3 cp "} {
		if len(run.called(want)) == 0 {
			t.Errorf("no call %q in\n%s", want, strings.Join(run.calls, "\n"))
		}
	}
	if !strings.Contains(run.out, "  mediaProxy: https://d123.cloudfront.net") || strings.Contains(run.out, "does not answer") {
		t.Errorf("deploy output:\n%s", run.out)
	}
	// The Function URL answers only CloudFront: the check goes through it.
	if len(run.curl) != 1 || !strings.HasSuffix(run.curl[0], " https://d123.cloudfront.net/") {
		t.Errorf("health check %q, want one GET of https://d123.cloudfront.net/", run.curl)
	}

	// Update: the domain is known, so one pass; the artifacts are there already.
	os.Remove(filepath.Join(state, "calls"))
	run = runScript(t, root, state, nil, "deploy", "--skip-package", "--region", "eu-west-1")
	deploys = run.called("cloudformation deploy")
	if len(deploys) != 1 || !strings.Contains(deploys[0], "PublicBaseUrl=https://d123.cloudfront.net") {
		t.Errorf("deploy calls on an update:\n%s", strings.Join(deploys, "\n"))
	}
	if len(run.called("create-bucket")) > 0 || len(run.called("s3 cp")) > 0 {
		t.Errorf("an update re-created the bucket or re-uploaded unchanged artifacts:\n%s", strings.Join(run.calls, "\n"))
	}
}

func TestDeployHealthCheck(t *testing.T) {
	root := fakeCheckout(t)
	// Without CloudFront the Function URL is public and is what is checked.
	run := runScript(t, root, deployed(t), []string{"FAKE_NO_CDN=1"}, "deploy", "--skip-package", "--param", "EnableCloudFront=false")
	if len(run.curl) != 1 || !strings.HasSuffix(run.curl[0], " https://abc.lambda-url.eu-west-1.on.aws/") {
		t.Errorf("health check without CloudFront %q, want the Function URL", run.curl)
	}
	run = runScript(t, root, deployed(t), []string{"FAKE_CURL_FAILS=1"}, "deploy", "--skip-package")
	if !strings.Contains(run.out, "deploy: the proxy does not answer at https://d123.cloudfront.net/") {
		t.Errorf("a failed health check is not reported:\n%s", run.out)
	}
}

// A stack deployed before streaming has a BUFFERED Function URL. The
// update switches it (in place: same URL, so CloudFront's origin stays),
// after the function's new code, so CloudFront may have cached what the
// streaming code answered through the buffered URL in between: deploy
// invalidates the distribution once, after the update, and only then.
func TestDeploySwitchFromBuffered(t *testing.T) {
	root := fakeCheckout(t)
	run := runScript(t, root, deployed(t), []string{"FAKE_URL_MODE=BUFFERED"}, "deploy", "--skip-package")
	inv := run.called("cloudfront create-invalidation")
	if len(inv) != 1 || !strings.Contains(inv[0], "--distribution-id E2DIST --paths /*") {
		t.Fatalf("invalidations %q in\n%s", inv, strings.Join(run.calls, "\n"))
	}
	if len(run.called("get-function-url-config --function-name stack-ProxyFunction-1 ")) != 1 {
		t.Errorf("the URL's mode was not read from the stack's function:\n%s", strings.Join(run.calls, "\n"))
	}
	last := func(part string) int {
		n := -1
		for i, c := range run.calls {
			if strings.Contains(c, part) {
				n = i
			}
		}
		return n
	}
	if last("cloudfront create-invalidation") < last("cloudformation deploy") {
		t.Error("invalidated before the stack update")
	}
	if !strings.Contains(run.out, "was BUFFERED") {
		t.Errorf("the switch is not reported:\n%s", run.out)
	}

	// Already streaming, or no CloudFront: nothing to clear.
	for _, env := range [][]string{nil, {"FAKE_URL_MODE=BUFFERED", "FAKE_NO_CDN=1"}} {
		run := runScript(t, root, deployed(t), env, "deploy", "--skip-package")
		if inv := run.called("create-invalidation"); len(inv) != 0 {
			t.Errorf("%v: invalidated %q", env, inv)
		}
	}
	// A new stack has nothing cached.
	run = runScript(t, root, t.TempDir(), []string{"FAKE_URL_MODE=BUFFERED"}, "deploy", "--skip-package")
	if inv := run.called("create-invalidation"); len(inv) != 0 {
		t.Errorf("new stack: invalidated %q", inv)
	}
}

// The cost cap: scripts/deploy reserves 20 instances for the proxy when
// the account can spare them without going under Lambda's unreserved
// minimum (100, or the whole quota when smaller), and otherwise deploys
// without a cap, loudly.
func TestDeployCostCap(t *testing.T) {
	root := fakeCheckout(t)
	const warning = "WARNING: NO COST CAP"
	for _, c := range []struct {
		name     string
		existing bool
		env      []string
		args     []string
		want     string // ProxyReservedConcurrency passed to every deploy call
		warns    bool
		asks     bool // whether it reads the account's settings
	}{
		{name: "default quota", env: []string{"FAKE_ACCOUNT=1000\t1000"}, want: "20", asks: true},
		{name: "just enough to spare", env: []string{"FAKE_ACCOUNT=1000\t120"}, want: "20", asks: true},
		{name: "new account, quota 10", env: []string{"FAKE_ACCOUNT=10\t10"}, want: "0", warns: true, asks: true},
		{name: "quota 50", env: []string{"FAKE_ACCOUNT=50\t50"}, want: "0", warns: true, asks: true},
		{name: "other functions reserve most", env: []string{"FAKE_ACCOUNT=1000\t119"}, want: "0", warns: true, asks: true},
		{name: "settings unreadable", env: []string{"FAKE_ACCOUNT="}, want: "0", warns: true, asks: true},
		// The stack's own reservation is already out of the unreserved pool.
		{name: "capped stack", existing: true, env: []string{"FAKE_ACCOUNT=1000\t100", "FAKE_RESERVED=20"}, want: "20"},
		{name: "stack left uncapped before, room now", existing: true, env: []string{"FAKE_ACCOUNT=1000\t1000", "FAKE_RESERVED=0"}, want: "20", asks: true},
		{name: "chosen by the admin", env: []string{"FAKE_ACCOUNT=10\t10"}, args: []string{"--param", "ProxyReservedConcurrency=5"}, want: "5"},
	} {
		t.Run(c.name, func(t *testing.T) {
			state := t.TempDir()
			if c.existing {
				state = deployed(t)
			}
			run := runScript(t, root, state, c.env, "deploy", append([]string{"--skip-package"}, c.args...)...)
			deploys := run.called("cloudformation deploy")
			if len(deploys) == 0 {
				t.Fatalf("no deployment:\n%s", run.out)
			}
			for _, d := range deploys {
				if !slices.Contains(strings.Fields(d), "ProxyReservedConcurrency="+c.want) {
					t.Errorf("deploy call without ProxyReservedConcurrency=%s: %s", c.want, d)
				}
			}
			if got := strings.Contains(run.out, warning); got != c.warns {
				t.Errorf("warning %v, want %v:\n%s", got, c.warns, run.out)
			}
			if got := len(run.called("lambda get-account-settings")) > 0; got != c.asks {
				t.Errorf("read the account's settings: %v, want %v", got, c.asks)
			}
			// Whatever it decides, the stack accepts it.
			render(t, printedParameters(t, run.out))
		})
	}
}

// destroySteps lists the calls of a destroy run that change something.
func destroySteps(run scriptRun) []string {
	var steps []string
	for _, c := range run.calls {
		for _, step := range []string{"put-function-concurrency", "s3 rm", "delete-stack", "wait stack-delete-complete"} {
			if strings.Contains(c, step) {
				fn := ""
				if step == "put-function-concurrency" {
					fn = " " + strings.Fields(c[strings.Index(c, "--function-name"):])[1]
				}
				steps = append(steps, step+fn)
			}
		}
	}
	return steps
}

func TestDestroy(t *testing.T) {
	run := runScript(t, "..", t.TempDir(), nil, "destroy", "--dry-run", "--region", "eu-west-1")
	if run.calls[0] != "" {
		t.Errorf("a dry run called aws: %q", run.calls)
	}
	if !strings.Contains(run.out, "+ aws cloudformation delete-stack --stack-name misskey-media-proxy") {
		t.Errorf("dry run output:\n%s", run.out)
	}

	run = runScript(t, "..", deployed(t), nil, "destroy", "--yes", "--region", "eu-west-1")
	want := []string{
		"put-function-concurrency stack-ProxyFunction-1", "put-function-concurrency stack-WorkerFunction-2",
		"s3 rm", "delete-stack", "wait stack-delete-complete",
	}
	if got := destroySteps(run); !slices.Equal(got, want) {
		t.Errorf("destroy steps %q, want %q", got, want)
	}
	if len(run.called("s3 rm --recursive --only-show-errors s3://variants-bucket")) != 1 {
		t.Errorf("the variants bucket was not emptied: %q", run.calls)
	}
	// The artifacts bucket is the stack's own, custom or not.
	for _, want := range []string{"aws --region eu-west-1 s3 rm --recursive s3://my-artifacts/misskey-media-proxy/", "aws --region eu-west-1 s3 rb --force s3://my-artifacts"} {
		if !strings.Contains(run.out, want) {
			t.Errorf("destroy does not say how to remove the artifacts (%q):\n%s", want, run.out)
		}
	}

	run = tryScript(t, "..", t.TempDir(), nil, "destroy", "--yes")
	if run.err == nil || !strings.Contains(run.out, "destroy: no stack misskey-media-proxy") || len(run.called("delete-stack")) > 0 {
		t.Errorf("destroy of a missing stack: %v\n%s", run.err, run.out)
	}
}

// A first deployment that rolled back (scripts/deploy sends people here)
// has no outputs and no live resources; destroy must still delete it.
func TestDestroyRolledBackStack(t *testing.T) {
	for name, resources := range map[string]string{
		"no resources listed": "",
		"resources deleted by the roll-back": "MediaBucket\tAWS::S3::Bucket\tDELETE_COMPLETE\tvariants-bucket\n" +
			"ProxyRole\tAWS::IAM::Role\tDELETE_COMPLETE\tstack-ProxyRole-1\n" +
			"ProxyFunction\tAWS::Lambda::Function\tDELETE_COMPLETE\tNone\n",
	} {
		t.Run(name, func(t *testing.T) {
			run := runScript(t, "..", deployed(t), []string{"FAKE_STACK_STATUS=ROLLBACK_COMPLETE", "FAKE_RESOURCES=" + resources}, "destroy", "--yes")
			if got, want := destroySteps(run), []string{"delete-stack", "wait stack-delete-complete"}; !slices.Equal(got, want) {
				t.Errorf("destroy steps %q, want %q", got, want)
			}
		})
	}
}

// describe-stack-resources lists deleted resources too, and a function may
// disappear between the listing and the throttle.
func TestDestroyDeletedResources(t *testing.T) {
	resources := "MediaBucket\tAWS::S3::Bucket\tCREATE_COMPLETE\tvariants-bucket\n" +
		"ProxyFunction\tAWS::Lambda::Function\tDELETE_COMPLETE\tstack-ProxyFunction-1\n" +
		"WorkerFunction\tAWS::Lambda::Function\tDELETE_FAILED\tstack-WorkerFunction-gone\n"
	run := runScript(t, "..", deployed(t), []string{"FAKE_STACK_STATUS=DELETE_FAILED", "FAKE_RESOURCES=" + resources}, "destroy", "--yes")
	want := []string{"put-function-concurrency stack-WorkerFunction-gone", "s3 rm", "delete-stack", "wait stack-delete-complete"}
	if got := destroySteps(run); !slices.Equal(got, want) {
		t.Errorf("destroy steps %q, want %q", got, want)
	}
	if !strings.Contains(run.out, "could not throttle stack-WorkerFunction-gone") {
		t.Errorf("the failed throttle is not reported:\n%s", run.out)
	}
}

// An invocation running when the functions were throttled can write a
// variant after the bucket was emptied; CloudFormation then cannot delete
// the bucket (DELETE_FAILED). Destroy waits out the function timeout,
// empties it again and deletes again.
func TestDestroyRetriesAfterLateWrites(t *testing.T) {
	start := time.Now()
	run := runScript(t, "..", deployed(t), []string{"FAKE_WAIT_FAILS=1"}, "destroy", "--yes")
	want := []string{
		"put-function-concurrency stack-ProxyFunction-1", "put-function-concurrency stack-WorkerFunction-2",
		"s3 rm", "delete-stack", "wait stack-delete-complete",
		"s3 rm", "delete-stack", "wait stack-delete-complete",
	}
	if got := destroySteps(run); !slices.Equal(got, want) {
		t.Errorf("destroy steps %q, want %q", got, want)
	}
	// The stand-in stack's functions time out after 1 s.
	if !strings.Contains(run.out, "until no invocation can still be running") || time.Since(start) < time.Second {
		t.Errorf("destroy did not wait out the function timeout (%v):\n%s", time.Since(start), run.out)
	}

	// A deletion that keeps failing ends after a few attempts, with an error.
	run = tryScript(t, "..", deployed(t), []string{"FAKE_WAIT_FAILS=9"}, "destroy", "--yes")
	if run.err == nil || len(run.called("delete-stack")) != 3 || !strings.Contains(run.out, "describe-stack-events") {
		t.Errorf("a deletion that always fails: %v, %d attempts\n%s", run.err, len(run.called("delete-stack")), run.out)
	}
}
