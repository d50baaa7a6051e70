package infra

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The deploy and destroy scripts run here against a stand-in `aws` that
// records its arguments and answers like the real CLI would. No AWS account
// is reachable from the tests.

const fakeAWS = `#!/bin/bash
echo "$*" >>"$FAKE_STATE/calls"
args="$*"
case $args in
  *"configure get region"*) exit 1 ;;
  *"sts get-caller-identity"*) echo 123456789012 ;;
  *"cloudformation describe-stacks"*)
    [ -f "$FAKE_STATE/deployed" ] || { echo "Stack with id x does not exist" >&2; exit 255; }
    case $args in
      *StackStatus*) echo UPDATE_COMPLETE ;;
      *"ParameterKey=='Architecture'"*) echo arm64 ;;
      *"OutputKey=='CloudFrontDomain'"*) echo d123.cloudfront.net ;;
      *"OutputKey=='FunctionUrl'"*) echo "$FAKE_FUNCTION_URL" ;;
      *"OutputKey=='BucketName'"*) echo variants-bucket ;;
      *"OutputKey=='MisskeyConfigLine'"*) echo "mediaProxy: https://d123.cloudfront.net" ;;
      *"Outputs[].[OutputKey,OutputValue]"*) printf 'CloudFrontDomain\td123.cloudfront.net\n' ;;
      *) echo None ;;
    esac ;;
  *"describe-stack-resources"*) printf 'stack-ProxyFunction-1\tstack-WorkerFunction-2\n' ;;
  *"s3api head-bucket"* | *"s3api head-object"*) [ -f "$FAKE_STATE/deployed" ] || exit 254 ;;
  *"cloudformation deploy"*) touch "$FAKE_STATE/deployed" ;;
esac
exit 0
`

type scriptRun struct {
	out   string
	calls []string // what the stand-in aws was asked, one line each
}

// runScript runs scripts/<name> with the stand-in aws first in PATH and no
// AWS configuration in the environment.
func runScript(t *testing.T, state string, extraEnv []string, name string, args ...string) scriptRun {
	t.Helper()
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "aws"), []byte(fakeAWS), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", append([]string{filepath.Join("..", "scripts", name)}, args...)...)
	cmd.Env = append([]string{
		"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH"),
		"HOME=" + t.TempDir(),
		"FAKE_STATE=" + state,
	}, extraEnv...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/%s %v: %v\n%s", name, args, err, out)
	}
	calls, _ := os.ReadFile(filepath.Join(state, "calls"))
	return scriptRun{out: string(out), calls: strings.Split(strings.TrimSpace(string(calls)), "\n")}
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
	run := runScript(t, state, nil, "deploy", "--dry-run", "--skip-package", "--stack-name", "test-stack",
		"--region", "ap-northeast-1", "--param", "AlarmEmail=ops@example.com", "--param", "EnableCloudFront=false")
	if run.calls[0] != "" {
		t.Errorf("a dry run called aws: %q", run.calls)
	}
	for _, want := range []string{
		"+ aws sts get-caller-identity",
		`+ aws s3api create-bucket --bucket misskey-media-proxy-\<account-id\>-ap-northeast-1 --create-bucket-configuration LocationConstraint=ap-northeast-1`,
		"+ aws s3 cp --only-show-errors ",
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
	packaged(t, "arm64") // a real run uploads the real zips
	health := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer health.Close()
	state := t.TempDir()
	env := []string{"FAKE_FUNCTION_URL=" + health.URL + "/"}

	run := runScript(t, state, env, "deploy", "--skip-package", "--region", "eu-west-1")
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
		if !slices.ContainsFunc(run.calls, func(c string) bool { return strings.Contains(c, want) }) {
			t.Errorf("no call %q in\n%s", want, strings.Join(run.calls, "\n"))
		}
	}
	if !strings.Contains(run.out, "  mediaProxy: https://d123.cloudfront.net") || strings.Contains(run.out, "does not answer") {
		t.Errorf("deploy output:\n%s", run.out)
	}

	// Update: the domain is known, so one pass; the artifacts are there already.
	os.Remove(filepath.Join(state, "calls"))
	run = runScript(t, state, env, "deploy", "--skip-package", "--region", "eu-west-1")
	deploys = slices.DeleteFunc(slices.Clone(run.calls), func(c string) bool { return !strings.Contains(c, "cloudformation deploy") })
	if len(deploys) != 1 || !strings.Contains(deploys[0], "PublicBaseUrl=https://d123.cloudfront.net") {
		t.Errorf("deploy calls on an update:\n%s", strings.Join(deploys, "\n"))
	}
	if slices.ContainsFunc(run.calls, func(c string) bool { return strings.Contains(c, "create-bucket") || strings.Contains(c, "s3 cp") }) {
		t.Errorf("an update re-created the bucket or re-uploaded unchanged artifacts:\n%s", strings.Join(run.calls, "\n"))
	}
}

func TestDestroy(t *testing.T) {
	run := runScript(t, t.TempDir(), nil, "destroy", "--dry-run", "--region", "eu-west-1")
	if run.calls[0] != "" {
		t.Errorf("a dry run called aws: %q", run.calls)
	}
	if !strings.Contains(run.out, "+ aws cloudformation delete-stack --stack-name misskey-media-proxy") {
		t.Errorf("dry run output:\n%s", run.out)
	}

	state := t.TempDir()
	os.WriteFile(filepath.Join(state, "deployed"), nil, 0o644)
	run = runScript(t, state, nil, "destroy", "--yes", "--region", "eu-west-1")
	var order []string
	for _, c := range run.calls {
		for _, step := range []string{"put-function-concurrency", "s3 rm --recursive --only-show-errors s3://variants-bucket", "delete-stack", "wait stack-delete-complete"} {
			if strings.Contains(c, step) {
				order = append(order, step)
			}
		}
	}
	want := []string{"put-function-concurrency", "put-function-concurrency", "s3 rm --recursive --only-show-errors s3://variants-bucket", "delete-stack", "wait stack-delete-complete"}
	if !slices.Equal(order, want) {
		t.Errorf("destroy steps %q, want %q", order, want)
	}
}
