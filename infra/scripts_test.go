package infra

import (
	"fmt"
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
// from the tests. The stand-in knows exactly the calls the scripts are
// meant to make: any other call fails (exit 252) and is recorded, and
// every test fails on one (see tryScript). It keeps its state in
// FAKE_STATE: whether the stack exists ("deployed"), its parameters as the
// last deployments left them ("params", merged as `cloudformation deploy`
// keeps the ones not passed), the artifacts uploaded ("objects"), the
// plan's stack ("edge"). The FAKE_* variables describe the account and the
// stack:
//
//	FAKE_NO_CREDENTIALS  set: no credentials (sts fails)
//	FAKE_READ_ERROR      describe-stacks fails with this message (not "does not exist")
//	FAKE_PARAMS_ERROR    reading the stack's parameters fails with this message
//	FAKE_STACK_STATUS    the stack's status (once deployed); default UPDATE_COMPLETE
//	FAKE_NO_RESOURCES    set: the stack has no resources yet (describe-stack-resource fails)
//	FAKE_RESOURCES       describe-stack-resources' rows (logical id, type,
//	                     status, physical id); default a live bucket and functions
//	FAKE_ACCOUNT         get-account-settings: "<quota>\t<unreserved>"; "" fails
//	FAKE_RESERVED        a deployed stack's ProxyReservedConcurrency to start with
//	FAKE_NO_CDN          set: the stack has no CloudFront
//	FAKE_FOREIGN_BUCKET  set: the artifacts bucket belongs to another account (403)
//	FAKE_WAIT_FAILS      how many stack-delete waits end in DELETE_FAILED
//	FAKE_CURL_FAILS      set: the health check fails
//	FAKE_URL_MODE        the Function URL's invoke mode; default RESPONSE_STREAM
const fakeAWS = `#!/bin/bash
echo "$*" >>"$FAKE_STATE/calls"
args="$*"
unexpected() {
  echo "$args" >>"$FAKE_STATE/unexpected"
  echo "stand-in aws: unexpected call: aws $args" >&2
  exit 252
}
# The stack's parameters, starting from a deployed stack's defaults.
params() {
  [ -f "$FAKE_STATE/params" ] || {
    printf 'Architecture\tarm64\nArtifactBucket\tmy-artifacts\nProxyTimeout\t1\nWorkerTimeout\t1\nImageUri\t\n' >"$FAKE_STATE/params"
    [ -z "$FAKE_RESERVED" ] || printf 'ProxyReservedConcurrency\t%s\n' "$FAKE_RESERVED" >>"$FAKE_STATE/params"
  }
  cat "$FAKE_STATE/params"
}
not_found() { echo "An error occurred (404) when calling the $1 operation: Not Found" >&2; exit 254; }
case $args in
  "configure get region") exit 1 ;;
  --region\ *) ;;
  *) unexpected ;;
esac
case $args in
  *" sts get-caller-identity --query Account --output text")
    [ -z "$FAKE_NO_CREDENTIALS" ] || { echo 'Unable to locate credentials. You can configure credentials by running "aws configure".' >&2; exit 253; }
    echo 123456789012 ;;
  *" cloudformation describe-stacks --stack-name "*-edge-*" --query Stacks[0].Outputs[?OutputKey=='WebAclArn'].OutputValue --output text")
    [ -f "$FAKE_STATE/edge" ] || unexpected
    echo "arn:aws:wafv2:us-east-1:123456789012:global/webacl/edge/1" ;;
  *" cloudformation describe-stacks --stack-name "*-edge-*" --query Stacks[0].Outputs[?OutputKey=='SubscriptionArn'].OutputValue --output text")
    grep -q "DistributionArn=arn" "$FAKE_STATE/edge" 2>/dev/null || unexpected
    echo "arn:aws:pricingplanmanager::123456789012:subscription/s1" ;;
  *" cloudformation describe-stacks --stack-name "*)
    [ -z "$FAKE_READ_ERROR" ] || { echo "$FAKE_READ_ERROR" >&2; exit 254; }
    [ -f "$FAKE_STATE/deployed" ] || { echo "An error occurred (ValidationError) when calling the DescribeStacks operation: Stack with id x does not exist" >&2; exit 254; }
    status=$(cat "$FAKE_STATE/status" 2>/dev/null || echo "${FAKE_STACK_STATUS:-UPDATE_COMPLETE}")
    case $args in
      *" --query Stacks[0].StackStatus --output text") echo "$status" ;;
      *" --query Stacks[0].[StackStatus,StackStatusReason] --output text") printf '%s\tThe following resource(s) failed to delete: [MediaBucket].\n' "$status" ;;
      *" --query Stacks[0].Parameters[].[ParameterKey,ParameterValue] --output text")
        [ -z "$FAKE_PARAMS_ERROR" ] || { echo "$FAKE_PARAMS_ERROR" >&2; exit 254; }
        params ;;
      *" --query Stacks[0].Outputs[].[OutputKey,OutputValue] --output text")
        printf 'FunctionUrl\thttps://abc.lambda-url.eu-west-1.on.aws/\nMisskeyConfigLine\tmediaProxy: https://d123.cloudfront.net\n'
        [ -n "$FAKE_NO_CDN" ] || printf 'CloudFrontDomain\td123.cloudfront.net\nDistributionArn\tarn:aws:cloudfront::123456789012:distribution/E2DIST\n' ;;
      *) unexpected ;;
    esac ;;
  *" cloudformation describe-stack-resource --stack-name "*" --query StackResourceDetail.PhysicalResourceId --output text")
    [ -z "$FAKE_NO_RESOURCES" ] || { echo "An error occurred (ValidationError) when calling the DescribeStackResource operation: Resource ProxyFunction does not exist for stack x" >&2; exit 254; }
    case $args in
      *" --logical-resource-id ProxyFunction "*) echo stack-ProxyFunction-1 ;;
      *" --logical-resource-id Distribution "*) if [ -n "$FAKE_NO_CDN" ]; then echo None; else echo E2DIST; fi ;;
      *) unexpected ;;
    esac ;;
  *" lambda get-function-url-config --function-name stack-ProxyFunction-1 --query InvokeMode --output text") echo "${FAKE_URL_MODE:-RESPONSE_STREAM}" ;;
  *" cloudformation describe-stack-resources --stack-name "*)
    printf '%b' "${FAKE_RESOURCES-MediaBucket\tAWS::S3::Bucket\tCREATE_COMPLETE\tvariants-bucket\nProxyFunction\tAWS::Lambda::Function\tUPDATE_COMPLETE\tstack-ProxyFunction-1\nWorkerFunction\tAWS::Lambda::Function\tUPDATE_COMPLETE\tstack-WorkerFunction-2\n}" ;;
  *" lambda get-account-settings --query [AccountLimit.ConcurrentExecutions,AccountLimit.UnreservedConcurrentExecutions] --output text")
    [ -n "$FAKE_ACCOUNT" ] || { echo "AccessDeniedException" >&2; exit 254; }
    printf '%b\n' "$FAKE_ACCOUNT" ;;
  *" lambda put-function-concurrency --function-name "*" --reserved-concurrent-executions 0")
    case $args in *-gone*) echo "ResourceNotFoundException: Function not found" >&2; exit 254 ;; esac ;;
  *" s3api head-bucket --bucket "*" --expected-bucket-owner 123456789012")
    [ -z "$FAKE_FOREIGN_BUCKET" ] || { echo "An error occurred (403) when calling the HeadBucket operation: Forbidden" >&2; exit 254; }
    [ -f "$FAKE_STATE/bucket" ] || [ -f "$FAKE_STATE/deployed" ] || not_found HeadBucket ;;
  *" s3api create-bucket --bucket "*) touch "$FAKE_STATE/bucket" ;;
  *" s3api put-public-access-block --bucket "*" --expected-bucket-owner 123456789012 --public-access-block-configuration BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true") ;;
  *" s3api put-bucket-policy --bucket "*" --expected-bucket-owner 123456789012 --policy "*) ;;
  *" s3api put-bucket-lifecycle-configuration --bucket "*" --expected-bucket-owner 123456789012 --lifecycle-configuration "*) ;;
  *" s3api head-object --bucket "*" --key "*" --expected-bucket-owner 123456789012")
    key=${args#* --key }; key=${key%% *}
    grep -qxF "$key" "$FAKE_STATE/objects" 2>/dev/null || not_found HeadObject ;;
  *" s3api put-object --bucket "*" --key "*" --body "*" --expected-bucket-owner 123456789012")
    key=${args#* --key }; echo "${key%% *}" >>"$FAKE_STATE/objects" ;;
  *" s3api delete-object-tagging --bucket "*" --key "*" --expected-bucket-owner 123456789012") ;;
  *" s3api put-object-tagging --bucket "*" --key "*" --expected-bucket-owner 123456789012 --tagging TagSet=[{Key=superseded,Value=true}]") ;;
  *" cloudformation deploy --stack-name "*-edge-*" --template-file "*"/infra/edge.yaml --no-fail-on-empty-changeset --parameter-overrides "*)
    printf '%s\n' "$args" >"$FAKE_STATE/edge" ;;
  *" cloudformation deploy --stack-name "*" --template-file "*"/infra/template.yaml --s3-bucket "*" --capabilities CAPABILITY_IAM --no-fail-on-empty-changeset --parameter-overrides "*)
    # A new stack starts with no parameters, a deployed one with its own.
    if [ -f "$FAKE_STATE/deployed" ]; then params >/dev/null; else touch "$FAKE_STATE/params"; fi
    overrides=false
    for a in "$@"; do
      if $overrides; then
        k=${a%%=*}
        grep -v "^$k	" "$FAKE_STATE/params" >"$FAKE_STATE/params.new"
        printf '%s\t%s\n' "$k" "${a#*=}" >>"$FAKE_STATE/params.new"
        mv "$FAKE_STATE/params.new" "$FAKE_STATE/params"
      fi
      [ "$a" != --parameter-overrides ] || overrides=true
    done
    touch "$FAKE_STATE/deployed" ;;
  *" cloudfront create-invalidation --distribution-id "*" --paths /*") ;;
  *" s3 rm --recursive --only-show-errors s3://"*) ;;
  *" cloudformation delete-stack --stack-name "*) ;;
  *" cloudformation wait stack-delete-complete --stack-name "*)
    case $args in *-edge-*) exit 0 ;; esac
    fails=$(cat "$FAKE_STATE/wait-fails" 2>/dev/null || echo "${FAKE_WAIT_FAILS:-0}")
    if [ "$fails" -gt 0 ]; then
      echo $((fails - 1)) >"$FAKE_STATE/wait-fails"
      echo DELETE_FAILED >"$FAKE_STATE/status"
      echo "Waiter StackDeleteComplete failed: Waiter encountered a terminal failure state" >&2
      exit 255
    fi ;;
  *) unexpected ;;
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
	code  int // the exit status
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
	// A call the scripts are not meant to make fails the test, even when
	// the script got past its failure.
	if u := lines("unexpected"); u[0] != "" {
		t.Errorf("scripts/%s %v made calls the stand-in aws does not expect:\n  %s\n%s", name, args, strings.Join(u, "\n  "), out)
		os.Remove(filepath.Join(state, "unexpected"))
	}
	return scriptRun{out: string(out), calls: lines("calls"), curl: lines("curl"), err: err, code: cmd.ProcessState.ExitCode()}
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
		`+ aws s3api put-object --bucket misskey-media-proxy-\<account-id\>-ap-northeast-1 --key test-stack/arm64/proxy-`,
		"+ aws lambda get-account-settings ",
		"a real run sets ProxyReservedConcurrency=12 when the account can spare it",
		"+ aws cloudformation deploy --stack-name test-stack --template-file ",
		"--capabilities CAPABILITY_IAM --no-fail-on-empty-changeset --parameter-overrides Architecture=arm64 ",
		"mediaProxy: ",
	} {
		if !strings.Contains(run.out, want) {
			t.Errorf("the dry run does not print %q:\n%s", want, run.out)
		}
	}
	params := printedParameters(t, run.out)
	for k, want := range map[string]string{"Architecture": "arm64", "AlarmEmail": "ops@example.com", "EnableCloudFront": "false", "EnableWorker": "true",
		"ProxyConcurrencyCap": "auto", "PricingPlan": "none"} {
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
	for _, want := range []string{"s3api create-bucket --bucket misskey-media-proxy-123456789012-eu-west-1 --create-bucket-configuration LocationConstraint=eu-west-1", "s3api put-object "} {
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
	if len(run.called("create-bucket")) > 0 || len(run.called("s3api put-object ")) > 0 {
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
	// A deployment that does not answer has failed: said, and exit 1.
	run = tryScript(t, root, deployed(t), []string{"FAKE_CURL_FAILS=1"}, "deploy", "--skip-package")
	if run.code != 1 || !strings.Contains(run.out, "deploy: the proxy does not answer at https://d123.cloudfront.net/") {
		t.Errorf("a failed health check: exit %d\n%s", run.code, run.out)
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

// The cost cap: scripts/deploy reserves 12 instances for the proxy when
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
		{name: "default quota", env: []string{"FAKE_ACCOUNT=1000\t1000"}, want: "12", asks: true},
		{name: "just enough to spare", env: []string{"FAKE_ACCOUNT=1000\t112"}, want: "12", asks: true},
		{name: "new account, quota 10", env: []string{"FAKE_ACCOUNT=10\t10"}, want: "0", warns: true, asks: true},
		{name: "quota 50", env: []string{"FAKE_ACCOUNT=50\t50"}, want: "0", warns: true, asks: true},
		{name: "other functions reserve most", env: []string{"FAKE_ACCOUNT=1000\t111"}, want: "0", warns: true, asks: true},
		{name: "settings unreadable", env: []string{"FAKE_ACCOUNT="}, want: "0", warns: true, asks: true},
		// The stack's own reservation is already out of the unreserved pool.
		{name: "capped stack", existing: true, env: []string{"FAKE_ACCOUNT=1000\t100", "FAKE_RESERVED=20"}, want: "20"},
		{name: "stack left uncapped before, room now", existing: true, env: []string{"FAKE_ACCOUNT=1000\t1000", "FAKE_RESERVED=0"}, want: "12", asks: true},
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

// stubPackage replaces the checkout's scripts/package by one that only
// records that it ran.
func stubPackage(t *testing.T, root string) {
	t.Helper()
	stub := "#!/bin/bash\ntouch \"$FAKE_STATE/packaged\"\n"
	if err := os.WriteFile(filepath.Join(root, "scripts", "package"), []byte(stub), 0o755); err != nil {
		t.Fatal(err)
	}
}

func builtIn(state string) bool {
	_, err := os.Stat(filepath.Join(state, "packaged"))
	return err == nil
}

// changes lists the calls that change something in the account.
func (r scriptRun) changes() []string {
	var out []string
	for _, c := range r.calls {
		for _, verb := range []string{" deploy ", " create-", " put-", " delete-", " s3 ", " cloudfront "} {
			if strings.Contains(c, verb) {
				out = append(out, c)
				break
			}
		}
	}
	return out
}

// Without usable credentials deploy stops at once: nothing built, nothing
// called but the identity check.
func TestDeployStopsWithoutCredentials(t *testing.T) {
	root := fakeCheckout(t)
	stubPackage(t, root)
	state := t.TempDir()
	run := tryScript(t, root, state, []string{"FAKE_NO_CREDENTIALS=1"}, "deploy", "--region", "eu-west-1")
	if run.code != 1 || !strings.Contains(run.out, "deploy: no usable AWS credentials") || !strings.Contains(run.out, "Unable to locate credentials") {
		t.Errorf("exit %d:\n%s", run.code, run.out)
	}
	if builtIn(state) {
		t.Error("built the artifacts before finding the credentials missing")
	}
	if want := []string{"--region eu-west-1 sts get-caller-identity --query Account --output text"}; !slices.Equal(run.calls, want) {
		t.Errorf("calls %q, want only %q", run.calls, want)
	}
}

// Only "does not exist" makes a new stack. Any other failure to read the
// stack (permissions, throttling, the network) stops deploy before it
// builds or changes anything, so that an existing stack never gets the
// defaults deployed over its settings.
func TestDeployStopsOnReadError(t *testing.T) {
	root := fakeCheckout(t)
	stubPackage(t, root)
	// A stack whose first change set never ran (REVIEW_IN_PROGRESS) has no
	// resources yet: that is no read error.
	run := tryScript(t, root, deployed(t), []string{"FAKE_STACK_STATUS=REVIEW_IN_PROGRESS", "FAKE_NO_RESOURCES=1"}, "deploy", "--region", "eu-west-1")
	if run.code != 0 || len(run.called("cloudformation deploy")) == 0 {
		t.Errorf("REVIEW_IN_PROGRESS: exit %d\n%s", run.code, run.out)
	}
	for _, c := range []struct {
		name  string
		env   []string
		fresh bool // the stand-in has no stack either
	}{
		{"denied", []string{"FAKE_READ_ERROR=An error occurred (AccessDenied) when calling the DescribeStacks operation: User is not authorized to perform: cloudformation:DescribeStacks"}, false},
		{"throttled", []string{"FAKE_READ_ERROR=An error occurred (Throttling) when calling the DescribeStacks operation: Rate exceeded"}, false},
		{"throttled, no stack", []string{"FAKE_READ_ERROR=An error occurred (Throttling) when calling the DescribeStacks operation: Rate exceeded"}, true},
		{"parameters unreadable", []string{"FAKE_PARAMS_ERROR=Could not connect to the endpoint URL"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			state := deployed(t)
			if c.fresh {
				state = t.TempDir()
			}
			run := tryScript(t, root, state, c.env, "deploy", "--region", "eu-west-1")
			if run.code != 1 || !strings.Contains(run.out, "nothing was") {
				t.Errorf("exit %d:\n%s", run.code, run.out)
			}
			if builtIn(state) {
				t.Error("built the artifacts after failing to read the stack")
			}
			if ch := run.changes(); len(ch) != 0 {
				t.Errorf("changed things after failing to read the stack:\n%s", strings.Join(ch, "\n"))
			}
		})
	}
}

// The cost cap is a choice the stack keeps: off stays off, a number stays
// that number, auto goes back to today's rule, on every plain deploy.
func TestDeployCapChoiceSticks(t *testing.T) {
	root := fakeCheckout(t)
	state := t.TempDir()
	deployWith := func(env []string, args ...string) scriptRun {
		t.Helper()
		os.Remove(filepath.Join(state, "calls"))
		return runScript(t, root, state, env, "deploy", append([]string{"--skip-package", "--region", "eu-west-1"}, args...)...)
	}
	check := func(step string, run scriptRun, cap, reserve string, asks bool) {
		t.Helper()
		deploys := run.called("cloudformation deploy")
		if len(deploys) == 0 {
			t.Fatalf("%s: no deployment:\n%s", step, run.out)
		}
		for _, d := range deploys {
			f := strings.Fields(d)
			if !slices.Contains(f, "ProxyConcurrencyCap="+cap) || !slices.Contains(f, "ProxyReservedConcurrency="+reserve) {
				t.Errorf("%s: deploy call without ProxyConcurrencyCap=%s ProxyReservedConcurrency=%s: %s", step, cap, reserve, d)
			}
		}
		if got := len(run.called("lambda get-account-settings")) > 0; got != asks {
			t.Errorf("%s: read the account's settings: %v, want %v", step, got, asks)
		}
		if strings.Contains(run.out, "WARNING: NO COST CAP") {
			t.Errorf("%s: warned although the cap is a choice:\n%s", step, run.out)
		}
		render(t, printedParameters(t, run.out))
	}
	roomy := []string{"FAKE_ACCOUNT=1000\t1000"}
	check("off, chosen", deployWith(roomy, "--param", "ProxyConcurrencyCap=off"), "off", "0", false)
	run := deployWith(roomy)
	check("off, kept", run, "off", "0", false)
	if !strings.Contains(run.out, "no cost cap, as chosen (ProxyConcurrencyCap=off)") {
		t.Errorf("off is not said:\n%s", run.out)
	}
	check("off, kept again", deployWith(roomy), "off", "0", false)
	check("50, chosen", deployWith(roomy, "--param", "ProxyConcurrencyCap=50"), "50", "50", false)
	check("50, kept", deployWith(roomy), "50", "50", false)
	// The old way of saying it: 0 is off, and it sticks too.
	check("0 the old way", deployWith(roomy, "--param", "ProxyReservedConcurrency=0"), "off", "0", false)
	check("0 the old way, kept", deployWith(roomy), "off", "0", false)
	check("auto again", deployWith(roomy, "--param", "ProxyConcurrencyCap=auto"), "auto", "12", true)
	check("auto, kept (the stack's 12)", deployWith(roomy), "auto", "12", false)

	os.Remove(filepath.Join(state, "calls"))
	if run := tryScript(t, root, state, roomy, "deploy", "--skip-package", "--param", "ProxyConcurrencyCap=lots"); run.code != 1 || len(run.changes()) != 0 {
		t.Errorf("a cap of lots: exit %d, changes %q", run.code, run.changes())
	}
}

// The artifacts bucket: every call names the account that must own it; the
// bucket deploy makes is TLS-only and drops the artifacts no deployment
// uses; one owned by another account stops deploy before anything is
// written to it.
func TestDeployArtifactBucket(t *testing.T) {
	root := fakeCheckout(t)
	state := t.TempDir()
	run := runScript(t, root, state, nil, "deploy", "--skip-package", "--region", "eu-west-1")
	for _, c := range run.called(" s3api ") {
		if !strings.Contains(c, "create-bucket") && !strings.Contains(c, "--expected-bucket-owner 123456789012") {
			t.Errorf("s3api call without the expected owner: %s", c)
		}
	}
	policy := run.called("s3api put-bucket-policy --bucket misskey-media-proxy-123456789012-eu-west-1 ")
	if len(policy) != 1 || !strings.Contains(policy[0], `"Effect":"Deny"`) || !strings.Contains(policy[0], `"aws:SecureTransport":"false"`) {
		t.Errorf("bucket policy %q, want TLS only", policy)
	}
	lc := run.called("s3api put-bucket-lifecycle-configuration --bucket misskey-media-proxy-123456789012-eu-west-1 ")
	if len(lc) != 1 || !strings.Contains(lc[0], `"Filter":{"Tag":{"Key":"superseded","Value":"true"}},"Expiration":{"Days":30}`) {
		t.Errorf("lifecycle %q, want superseded artifacts to expire", lc)
	}

	// An update with new code marks the artifacts it replaces superseded
	// (they expire in 30 days); unchanged ones are used again, unmarked.
	oldProxy := strings.Fields(run.called("put-object --bucket misskey-media-proxy-123456789012-eu-west-1 --key misskey-media-proxy/arm64/proxy-")[0])[7]
	if err := os.WriteFile(filepath.Join(root, "dist/arm64/proxy.zip"), []byte("new proxy zip"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(state, "calls"))
	run = runScript(t, root, state, nil, "deploy", "--skip-package", "--region", "eu-west-1")
	tagged := run.called("put-object-tagging")
	if len(tagged) != 1 || !strings.Contains(tagged[0], "--key "+oldProxy+" ") {
		t.Errorf("superseded %q, want the old proxy artifact %s", tagged, oldProxy)
	}
	if untagged := run.called("delete-object-tagging"); len(untagged) != 1 || !strings.Contains(untagged[0], "/worker-") {
		t.Errorf("reused artifacts unmarked: %q, want the worker's", untagged)
	}
	if last := run.calls[len(run.calls)-1]; !strings.Contains(last, "describe-stacks") && !strings.Contains(last, "put-object-tagging") {
		t.Logf("last call %s", last)
	}

	// Someone else's bucket of that name: stop before writing anything.
	foreign := tryScript(t, root, t.TempDir(), []string{"FAKE_FOREIGN_BUCKET=1"}, "deploy", "--skip-package", "--region", "eu-west-1")
	if foreign.code != 1 || !strings.Contains(foreign.out, "is not this account's") || len(foreign.changes()) != 0 {
		t.Errorf("foreign bucket: exit %d, changes %q\n%s", foreign.code, foreign.changes(), foreign.out)
	}
}

// Two stacks of one name in two regions: nothing of one is the other's
// (the template's names carry the stack's id: TestAccountUniqueNames).
func TestDeployTwoRegions(t *testing.T) {
	root := fakeCheckout(t)
	buckets := map[string]bool{}
	for _, region := range []string{"us-east-1", "ap-northeast-1"} {
		run := runScript(t, root, t.TempDir(), nil, "deploy", "--skip-package", "--region", region, "--param", "PricingPlan=free")
		for _, c := range run.called("cloudformation deploy") {
			if strings.Contains(c, "-edge-") && !strings.Contains(c, "--stack-name misskey-media-proxy-edge-"+region+" ") {
				t.Errorf("%s: plan stack %s", region, c)
			}
		}
		b := printedParameters(t, run.out)["ArtifactBucket"]
		if buckets[b] {
			t.Errorf("both regions use bucket %s", b)
		}
		buckets[b] = true
	}
}

// A flat-rate plan: its web ACL first (us-east-1), the stack naming it,
// then the subscription once the distribution exists; the plan sticks; a
// paid plan says how to approve it; a plan is not changed by deploy; and
// destroy ends the subscription before it deletes the distribution.
func TestDeployPricingPlan(t *testing.T) {
	root := fakeCheckout(t)
	state := t.TempDir()
	run := runScript(t, root, state, nil, "deploy", "--skip-package", "--region", "eu-west-1", "--param", "PricingPlan=pro")
	var steps []string
	for _, c := range run.calls {
		switch {
		case strings.Contains(c, "--region us-east-1 cloudformation deploy --stack-name misskey-media-proxy-edge-eu-west-1 "):
			arn, _ := strings.CutPrefix(c[strings.Index(c, "DistributionArn="):], "DistributionArn=")
			steps = append(steps, "edge DistributionArn="+arn)
		case strings.Contains(c, "--region eu-west-1 cloudformation deploy --stack-name misskey-media-proxy "):
			f := strings.Fields(c)
			steps = append(steps, fmt.Sprintf("stack PricingPlan=pro %v WebAclArn %v", slices.Contains(f, "PricingPlan=pro"),
				slices.Contains(f, "WebAclArn=arn:aws:wafv2:us-east-1:123456789012:global/webacl/edge/1")))
		}
	}
	want := []string{
		"edge DistributionArn=",
		"stack PricingPlan=pro true WebAclArn true",
		"stack PricingPlan=pro true WebAclArn true", // the PublicBaseUrl pass
		"edge DistributionArn=arn:aws:cloudfront::123456789012:distribution/E2DIST",
	}
	if !slices.Equal(steps, want) {
		t.Errorf("steps\n  %s\nwant\n  %s", strings.Join(steps, "\n  "), strings.Join(want, "\n  "))
	}
	if !strings.Contains(run.out, "approve-paid-subscription --arn arn:aws:pricingplanmanager::123456789012:subscription/s1") {
		t.Errorf("a paid plan does not say how to approve it:\n%s", run.out)
	}
	edge := renderFile(t, edgeFile, map[string]string{"ProxyStack": "misskey-media-proxy (eu-west-1)", "PlanTier": "PRO",
		"DistributionArn": "arn:aws:cloudfront::123456789012:distribution/E2DIST"})
	if _, ok := mapOf(edge.Raw["Resources"])["Subscription"]; !ok {
		t.Error("the edge stack as deployed has no subscription")
	}

	// A plain deploy keeps the plan (and the subscription's stack as it is).
	os.Remove(filepath.Join(state, "calls"))
	run = runScript(t, root, state, nil, "deploy", "--skip-package", "--region", "eu-west-1")
	if p := printedParameters(t, run.out); p["PricingPlan"] != "pro" || p["WebAclArn"] == "" {
		t.Errorf("plain deploy: PricingPlan=%q WebAclArn=%q, want the stack's plan kept", p["PricingPlan"], p["WebAclArn"])
	}
	if e := run.called("edge-eu-west-1 "); len(e) != 2 || !strings.Contains(e[0], "DistributionArn=arn:aws:cloudfront::123456789012:distribution/E2DIST") {
		t.Errorf("plain deploy: plan stack calls %q", e)
	}

	// Changing the plan is the console's job (CloudFormation cannot).
	os.Remove(filepath.Join(state, "calls"))
	bad := tryScript(t, root, state, nil, "deploy", "--skip-package", "--region", "eu-west-1", "--param", "PricingPlan=business")
	if bad.code != 1 || !strings.Contains(bad.out, "CloudFormation cannot change a plan's tier") || len(bad.changes()) != 0 {
		t.Errorf("changing the plan: exit %d, changes %q\n%s", bad.code, bad.changes(), bad.out)
	}
	// A plan is CloudFront's.
	bad = tryScript(t, root, t.TempDir(), nil, "deploy", "--skip-package", "--param", "PricingPlan=free", "--param", "EnableCloudFront=false")
	if bad.code != 1 || len(bad.changes()) != 0 {
		t.Errorf("a plan without CloudFront: exit %d, changes %q", bad.code, bad.changes())
	}

	// Ending the plan: the subscription, then the stack without the web
	// ACL, then the plan's stack.
	ended := t.TempDir()
	runScript(t, root, ended, nil, "deploy", "--skip-package", "--region", "eu-west-1", "--param", "PricingPlan=free")
	os.Remove(filepath.Join(ended, "calls"))
	run = runScript(t, root, ended, nil, "deploy", "--skip-package", "--region", "eu-west-1", "--param", "PricingPlan=none")
	var ending []string
	for _, c := range run.calls {
		switch {
		case strings.Contains(c, "edge-eu-west-1") && strings.Contains(c, " deploy ") && strings.HasSuffix(c, "DistributionArn="):
			ending = append(ending, "end subscription")
		case strings.Contains(c, "cloudformation deploy --stack-name misskey-media-proxy ") && slices.Contains(strings.Fields(c), "WebAclArn=") && slices.Contains(strings.Fields(c), "PricingPlan=none"):
			ending = append(ending, "stack without web ACL")
		case strings.Contains(c, "delete-stack --stack-name misskey-media-proxy-edge-eu-west-1"):
			ending = append(ending, "delete plan stack")
		}
	}
	if want := []string{"end subscription", "stack without web ACL", "delete plan stack"}; !slices.Equal(ending, want) {
		t.Errorf("ending the plan: %q, want %q", ending, want)
	}

	// Destroy: the subscription goes first, then the stack, then the plan's stack.
	os.Remove(filepath.Join(state, "calls"))
	run = runScript(t, root, state, nil, "destroy", "--yes", "--region", "eu-west-1")
	var order []string
	for _, c := range run.calls {
		switch {
		case strings.Contains(c, "edge-eu-west-1") && strings.Contains(c, " deploy ") && strings.HasSuffix(c, "DistributionArn="):
			order = append(order, "end subscription")
		case strings.Contains(c, "delete-stack --stack-name misskey-media-proxy-edge-eu-west-1"):
			order = append(order, "delete plan stack")
		case strings.Contains(c, "delete-stack --stack-name misskey-media-proxy"):
			order = append(order, "delete stack")
		}
	}
	if want := []string{"end subscription", "delete stack", "delete plan stack"}; !slices.Equal(order, want) {
		t.Errorf("destroy order %q, want %q", order, want)
	}
}
