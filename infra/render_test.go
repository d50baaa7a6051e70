package infra

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/awslabs/goformation/v7"
	"github.com/awslabs/goformation/v7/cloudformation"
	"github.com/awslabs/goformation/v7/intrinsics"
)

// The template is read with goformation (the typed CloudFormation model and
// its intrinsic-function processor). Out of the box that processor resolves
// Ref only against parameter defaults, drops attributes (GetAtt gives nil),
// has no !Condition tag and replaces any map holding a "Condition" key (a
// resource's or a policy statement's) by a boolean when asked to evaluate
// conditions. So render runs it in steps, the way CloudFormation would:
//
//  1. read the YAML with processing off (long-form intrinsics);
//  2. evaluate the Conditions section alone, with string parameter values;
//  3. drop resources and outputs whose condition is false;
//  4. process the rest with Ref, Fn::GetAtt, Fn::Sub, Fn::FindInMap and
//     Fn::Split handlers that know every parameter and give resources
//     readable placeholders ("<Bucket>", "<Bucket.Arn>");
//  5. unmarshal into goformation's typed resources.

const (
	templateFile = "template.yaml"
	// edgeFile is the flat-rate plan's stack, in us-east-1.
	edgeFile = "edge.yaml"
)

// unmodelled lists properties CloudFormation has and goformation v7.14.9
// does not.
var unmodelled = map[string][]string{
	"AWS::Lambda::Permission": {"InvokedViaFunctionUrl"}, // added in 2025
}

// unmodelledTypes are resource types goformation v7.14.9 does not know;
// the tests read them from Raw.
var unmodelledTypes = []string{"AWS::PricingPlanManager::Subscription"} // added in 2025

// stackUUID is the last part of AWS::StackId.
const stackUUID = "51af3dc0-da77-11e4-872e-1234567db123"

// Placeholders the handlers give resources. The Function URL looks like one
// so that the template's !Select/!Split on it works.
func refOf(resource string) string       { return "<" + resource + ">" }
func attOf(resource, attr string) string { return "<" + resource + "." + attr + ">" }
func functionURLOf(resource string) string {
	return "https://" + refOf(resource) + ".lambda-url.us-east-1.on.aws/"
}

// rawTemplate returns the template as generic JSON values, intrinsics in
// long form ({"Ref": ...}, {"Fn::GetAtt": ...}).
func rawTemplate(t *testing.T) map[string]any {
	t.Helper()
	return rawTemplateOf(t, templateFile)
}

func rawTemplateOf(t *testing.T, file string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	js, err := intrinsics.ProcessYAML(data, &intrinsics.ProcessorOptions{NoProcess: true})
	if err != nil {
		t.Fatalf("goformation cannot read %s: %v", file, err)
	}
	var raw map[string]any
	if err := json.Unmarshal(js, &raw); err != nil {
		t.Fatal(err)
	}
	return raw
}

// stackName is AWS::StackName unless params name another.
const stackName = "misskey-media-proxy"

// parameters returns every parameter's value: its default, or params'.
// params may also set the pseudo parameter AWS::StackName.
func parameters(t *testing.T, raw map[string]any, params map[string]string) map[string]string {
	t.Helper()
	values := map[string]string{"AWS::StackName": stackName}
	for name, p := range mapOf(raw["Parameters"]) {
		if d, ok := mapOf(p)["Default"]; ok {
			values[name] = fmt.Sprint(d)
		}
	}
	for name, v := range params {
		if _, ok := mapOf(raw["Parameters"])[name]; !ok && name != "AWS::StackName" {
			t.Fatalf("render: no parameter %s in the template", name)
		}
		values[name] = v
	}
	return values
}

// rendered is the template as deployed with some parameter values.
type rendered struct {
	*cloudformation.Template
	Conditions map[string]bool
	// Raw is the processed template as generic values, for the properties
	// goformation v7.14.9 does not model (Lambda::Permission's
	// InvokedViaFunctionUrl).
	Raw map[string]any
}

// render renders template.yaml with params; the test fails if one of its
// Rules refuses them.
func render(t *testing.T, params map[string]string) rendered {
	t.Helper()
	return renderFile(t, templateFile, params)
}

func renderFile(t *testing.T, file string, params map[string]string) rendered {
	t.Helper()
	if refused := refusals(t, file, params); len(refused) > 0 {
		t.Fatalf("render %s: the template's rules refuse %v: %q", file, params, refused)
	}
	raw := rawTemplateOf(t, file)
	values := parameters(t, raw, params)
	types := map[string]string{}
	for name, p := range mapOf(raw["Parameters"]) {
		types[name] = fmt.Sprint(mapOf(p)["Type"])
	}
	for name := range values {
		if types[name] == "Number" {
			if _, err := strconv.ParseFloat(values[name], 64); err != nil {
				t.Fatalf("render: parameter %s=%q is not a number", name, values[name])
			}
		}
	}

	// Step 2.
	conditions := map[string]bool{}
	for name, v := range evalConditions(t, mapOf(raw["Conditions"]), values) {
		b, ok := v.(bool)
		if !ok {
			t.Fatalf("render: condition %s did not evaluate to a boolean: %v", name, v)
		}
		conditions[name] = b
	}

	// Step 3.
	for _, section := range []string{"Resources", "Outputs"} {
		for name, r := range mapOf(raw[section]) {
			if c, ok := mapOf(r)["Condition"].(string); ok {
				b, known := conditions[c]
				if !known {
					t.Fatalf("render: %s %s names unknown condition %s", section, name, c)
				}
				if !b {
					delete(mapOf(raw[section]), name)
				}
			}
		}
	}
	raw["Conditions"] = conditions

	// Step 4: typed properties (MemorySize, Timeout, ...) need numbers, so
	// Number parameters resolve to numbers here; CloudFormation converts
	// the same way when it applies them.
	opts := &intrinsics.ProcessorOptions{IntrinsicHandlerOverrides: map[string]intrinsics.IntrinsicHandler{
		"Ref":           refHandler(values, types),
		"Fn::GetAtt":    getAttHandler,
		"Fn::Sub":       subHandler(values),
		"Fn::FindInMap": findInMapHandler,
		"Fn::Split":     splitHandler,
	}}
	doc, _ := json.Marshal(raw)
	processed, err := intrinsics.ProcessJSON(doc, opts)
	if err != nil {
		t.Fatal(err)
	}
	var generic map[string]any
	if err := json.Unmarshal(processed, &generic); err != nil {
		t.Fatal(err)
	}
	// Environment variables are strings whatever they reference.
	for _, r := range mapOf(generic["Resources"]) {
		vars := mapOf(mapOf(mapOf(mapOf(r)["Properties"])["Environment"])["Variables"])
		for k, v := range vars {
			switch n := v.(type) {
			case float64:
				vars[k] = strconv.FormatFloat(n, 'f', -1, 64)
			case nil:
			default:
				vars[k] = fmt.Sprint(n)
			}
		}
	}
	processed, _ = json.Marshal(generic)

	// Step 5. goformation rejects properties newer than its model; the tests
	// read those from Raw.
	var typed map[string]any
	_ = json.Unmarshal(processed, &typed)
	for _, r := range mapOf(typed["Resources"]) {
		for _, p := range unmodelled[fmt.Sprint(mapOf(r)["Type"])] {
			delete(mapOf(mapOf(r)["Properties"]), p)
		}
	}
	for name, r := range mapOf(typed["Resources"]) {
		if slices.Contains(unmodelledTypes, fmt.Sprint(mapOf(r)["Type"])) {
			delete(mapOf(typed["Resources"]), name)
		}
	}
	processed, _ = json.Marshal(typed)
	tmpl, err := goformation.ParseJSONWithOptions(processed, &intrinsics.ProcessorOptions{NoProcess: true})
	if err != nil {
		t.Fatalf("goformation cannot type the rendered template: %v", err)
	}
	return rendered{Template: tmpl, Conditions: conditions, Raw: generic}
}

// refusals evaluates the template's Rules as CloudFormation does before
// anything is created, and returns the AssertDescription of each
// assertion that fails for params.
func refusals(t *testing.T, file string, params map[string]string) []string {
	t.Helper()
	raw := rawTemplateOf(t, file)
	values := parameters(t, raw, params)
	// Rule conditions and assertions are condition functions: evaluate
	// them as a Conditions section.
	conds := map[string]any{}
	descriptions := map[string]string{}
	for name, r := range mapOf(raw["Rules"]) {
		rule := mapOf(r)
		if c, ok := rule["RuleCondition"]; ok {
			conds[name+"/if"] = c
		}
		for i, a := range listOf(rule["Assertions"]) {
			key := fmt.Sprintf("%s/%d", name, i)
			conds[key] = mapOf(a)["Assert"]
			descriptions[key] = fmt.Sprint(mapOf(a)["AssertDescription"])
		}
	}
	if len(conds) == 0 {
		return nil
	}
	evaluated := evalConditions(t, conds, values)
	var refused []string
	for key, desc := range descriptions {
		rule, _, _ := strings.Cut(key, "/")
		if applies, ok := evaluated[rule+"/if"]; ok && applies != true {
			continue
		}
		if b, ok := evaluated[key].(bool); !ok {
			t.Fatalf("rule assertion %s did not evaluate to a boolean: %v", key, evaluated[key])
		} else if !b {
			refused = append(refused, desc)
		}
	}
	sort.Strings(refused)
	return refused
}

// evalConditions evaluates condition functions (Fn::Equals, Fn::Not, ...)
// with parameter values, as CloudFormation does: it compares them as
// strings.
func evalConditions(t *testing.T, conds map[string]any, values map[string]string) map[string]any {
	t.Helper()
	doc, _ := json.Marshal(map[string]any{"Conditions": conds})
	out, err := intrinsics.ProcessJSON(doc, &intrinsics.ProcessorOptions{
		EvaluateConditions:        true,
		IntrinsicHandlerOverrides: map[string]intrinsics.IntrinsicHandler{"Ref": refHandler(values, nil)},
	})
	if err != nil {
		t.Fatal(err)
	}
	var evaluated struct{ Conditions map[string]any }
	if err := json.Unmarshal(out, &evaluated); err != nil {
		t.Fatal(err)
	}
	return evaluated.Conditions
}

// refHandler resolves Ref: parameters to their values (numbers for Number
// parameters when types is given), pseudo parameters to fixed values,
// resources to placeholders.
func refHandler(values, types map[string]string) intrinsics.IntrinsicHandler {
	return func(_ string, input any, _ any) any {
		name, ok := input.(string)
		if !ok {
			return nil
		}
		switch name {
		case "AWS::NoValue":
			return nil
		case "AWS::Region":
			return "us-east-1"
		case "AWS::AccountId":
			return "123456789012"
		case "AWS::Partition":
			return "aws"
		case "AWS::StackId":
			return "arn:aws:cloudformation:us-east-1:123456789012:stack/" + values["AWS::StackName"] + "/" + stackUUID
		}
		if v, ok := values[name]; ok {
			if types != nil && types[name] == "Number" {
				f, _ := strconv.ParseFloat(v, 64)
				return f
			}
			return v
		}
		return refOf(name)
	}
}

func getAttHandler(_ string, input any, _ any) any {
	var parts []string
	switch v := input.(type) {
	case string: // !GetAtt A.B
		parts = strings.SplitN(v, ".", 2)
	case []any: // Fn::GetAtt: [A, B]
		for _, p := range v {
			parts = append(parts, fmt.Sprint(p))
		}
	}
	if len(parts) != 2 {
		return nil
	}
	if parts[1] == "FunctionUrl" {
		return functionURLOf(parts[0])
	}
	return attOf(parts[0], parts[1])
}

var subVariable = regexp.MustCompile(`\$\{(!?)([^}]+)\}`)

// subHandler resolves Fn::Sub with the same Ref and GetAtt as above; the
// stock one calls its own, which know no resources.
func subHandler(values map[string]string) intrinsics.IntrinsicHandler {
	ref := refHandler(values, nil)
	return func(_ string, input any, _ any) any {
		var src string
		vars := map[string]any{}
		switch v := input.(type) {
		case string:
			src = v
		case []any:
			if len(v) != 2 {
				return nil
			}
			src, _ = v[0].(string)
			vars = mapOf(v[1])
		default:
			return nil
		}
		return subVariable.ReplaceAllStringFunc(src, func(m string) string {
			g := subVariable.FindStringSubmatch(m)
			if g[1] == "!" { // ${!Literal}
				return "${" + g[2] + "}"
			}
			if v, ok := vars[g[2]]; ok {
				return fmt.Sprint(v)
			}
			if res, attr, ok := strings.Cut(g[2], "."); ok {
				return fmt.Sprint(getAttHandler("", []any{res, attr}, nil))
			}
			return fmt.Sprint(ref("", g[2], nil))
		})
	}
}

// findInMapHandler looks up Mappings with keys that may have resolved to
// numbers.
func findInMapHandler(_ string, input any, template any) any {
	args, ok := input.([]any)
	if !ok || len(args) != 3 {
		return nil
	}
	key := func(v any) string {
		if f, ok := v.(float64); ok {
			return strconv.FormatFloat(f, 'f', -1, 64)
		}
		return fmt.Sprint(v)
	}
	m := mapOf(mapOf(mapOf(template)["Mappings"])[key(args[0])])
	return mapOf(m[key(args[1])])[key(args[2])]
}

// splitHandler returns []any: the stock one returns []string, which its
// own Fn::Select does not accept.
func splitHandler(_ string, input any, _ any) any {
	args, ok := input.([]any)
	if !ok || len(args) != 2 {
		return nil
	}
	var out []any
	for _, part := range strings.Split(fmt.Sprint(args[1]), fmt.Sprint(args[0])) {
		out = append(out, part)
	}
	return out
}

func mapOf(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// jsonText marshals v without escaping <, > and & (placeholders use them).
func jsonText(v any) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return strings.TrimSpace(b.String())
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
