// Command ctyenc encodes the contents of an HCL `config {}` block the way a Nomad client does:
// it builds an hcldec spec from our JSON form of Nomad's hclspec tree (see
// crates/nomad-plugin/src/hclspec.rs, `to_json`), decodes the HCL body with hcldec and prints
// go-cty's msgpack encoding of the result against the value's own type.
//
// It exists only to produce golden files and to check our Rust encoder and decoder against the
// real go-cty; it is not part of the product. Build it in GOPATH mode with Debian's packages:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go run ./tools/ctyenc -spec S.json -config C.hcl
//
// Flags:
//
//	-spec FILE    the spec in our JSON form (required)
//	-config FILE  the HCL body: the contents of a `config {}` block (required)
//	-vars FILE    optional JSON object of string variables usable as ${NAME} in the body
//	-type JSON    optional cty type in cty's JSON form to marshal against instead of the value's
//	              own type (e.g. "dynamic" to produce the [typeJSON, value] wrapper)
//	-out FILE     write raw bytes to FILE instead of printing hex to stdout
package main

import (
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io/ioutil"
	"os"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	ctyjson "github.com/zclconf/go-cty/cty/json"
	"github.com/zclconf/go-cty/cty/msgpack"
)

// jsonSpec is one node of our JSON spec form: exactly one field is set.
type jsonSpec struct {
	Object     map[string]*jsonSpec `json:"object"`
	Array      []*jsonSpec          `json:"array"`
	Attr       *jsonAttr            `json:"attr"`
	Block      *jsonBlock           `json:"block"`
	BlockAttrs *jsonAttr            `json:"block_attrs"`
	BlockList  *jsonBlockList       `json:"block_list"`
	BlockSet   *jsonBlockList       `json:"block_set"`
	BlockMap   *jsonBlockMap        `json:"block_map"`
	Default    *jsonDefault         `json:"default"`
	Literal    *jsonLiteral         `json:"literal"`
}

type jsonAttr struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	Required bool   `json:"required"`
}

type jsonBlock struct {
	Name     string    `json:"name"`
	Required bool      `json:"required"`
	Nested   *jsonSpec `json:"nested"`
}

type jsonBlockList struct {
	Name     string    `json:"name"`
	MinItems int       `json:"min_items"`
	MaxItems int       `json:"max_items"`
	Nested   *jsonSpec `json:"nested"`
}

type jsonBlockMap struct {
	Name   string    `json:"name"`
	Labels []string  `json:"labels"`
	Nested *jsonSpec `json:"nested"`
}

type jsonDefault struct {
	Primary *jsonSpec `json:"primary"`
	Default *jsonSpec `json:"default"`
}

type jsonLiteral struct {
	Value string `json:"value"`
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "ctyenc: "+format+"\n", args...)
	os.Exit(1)
}

// pick returns the explicit name, or the object key the spec sits under, as Nomad does.
func pick(explicit, implied string) string {
	if explicit != "" {
		return explicit
	}
	return implied
}

func parseType(expr string) cty.Type {
	parsed, diags := hclsyntax.ParseExpression([]byte(expr), "type", hcl.InitialPos)
	if diags.HasErrors() {
		fail("type %q: %s", expr, diags.Error())
	}
	ty, diags := typeexpr.TypeConstraint(parsed)
	if diags.HasErrors() {
		fail("type %q: %s", expr, diags.Error())
	}
	return ty
}

func nested(s *jsonSpec, what string) hcldec.Spec {
	if s == nil {
		fail("%s has no nested spec", what)
	}
	return build(s, "")
}

// build converts one node; implied is the object key above it (empty inside default/array).
func build(s *jsonSpec, implied string) hcldec.Spec {
	switch {
	case s.Object != nil:
		out := hcldec.ObjectSpec{}
		for key, child := range s.Object {
			out[key] = build(child, key)
		}
		return out
	case s.Array != nil:
		out := hcldec.TupleSpec{}
		for _, child := range s.Array {
			out = append(out, build(child, ""))
		}
		return out
	case s.Attr != nil:
		return &hcldec.AttrSpec{Name: pick(s.Attr.Name, implied), Type: parseType(s.Attr.Type), Required: s.Attr.Required}
	case s.Block != nil:
		return &hcldec.BlockSpec{TypeName: pick(s.Block.Name, implied), Required: s.Block.Required, Nested: nested(s.Block.Nested, "block")}
	case s.BlockAttrs != nil:
		return &hcldec.BlockAttrsSpec{TypeName: pick(s.BlockAttrs.Name, implied), ElementType: parseType(s.BlockAttrs.Type), Required: s.BlockAttrs.Required}
	case s.BlockList != nil:
		b := s.BlockList
		return &hcldec.BlockListSpec{TypeName: pick(b.Name, implied), MinItems: b.MinItems, MaxItems: b.MaxItems, Nested: nested(b.Nested, "block_list")}
	case s.BlockSet != nil:
		b := s.BlockSet
		return &hcldec.BlockSetSpec{TypeName: pick(b.Name, implied), MinItems: b.MinItems, MaxItems: b.MaxItems, Nested: nested(b.Nested, "block_set")}
	case s.BlockMap != nil:
		b := s.BlockMap
		return &hcldec.BlockMapSpec{TypeName: pick(b.Name, implied), LabelNames: b.Labels, Nested: nested(b.Nested, "block_map")}
	case s.Default != nil:
		if s.Default.Primary == nil || s.Default.Default == nil {
			fail("default needs both primary and default")
		}
		return &hcldec.DefaultSpec{Primary: build(s.Default.Primary, ""), Default: build(s.Default.Default, "")}
	case s.Literal != nil:
		expr, diags := hclsyntax.ParseExpression([]byte(s.Literal.Value), "literal", hcl.InitialPos)
		if diags.HasErrors() {
			fail("literal %q: %s", s.Literal.Value, diags.Error())
		}
		val, diags := expr.Value(nil)
		if diags.HasErrors() {
			fail("literal %q: %s", s.Literal.Value, diags.Error())
		}
		return &hcldec.LiteralSpec{Value: val}
	}
	fail("empty spec node")
	return nil
}

func main() {
	specPath := flag.String("spec", "", "spec JSON file")
	configPath := flag.String("config", "", "HCL body file")
	varsPath := flag.String("vars", "", "optional JSON object of string variables")
	typeJSON := flag.String("type", "", "optional cty type JSON to marshal against")
	outPath := flag.String("out", "", "write raw bytes here instead of hex to stdout")
	flag.Parse()
	if *specPath == "" || *configPath == "" {
		fail("usage: ctyenc -spec SPEC.json -config BODY.hcl [-vars VARS.json] [-type TYPEJSON] [-out FILE]")
	}

	specBytes, err := ioutil.ReadFile(*specPath)
	if err != nil {
		fail("%s", err)
	}
	var root jsonSpec
	if err := json.Unmarshal(specBytes, &root); err != nil {
		fail("spec %s: %s", *specPath, err)
	}
	spec := build(&root, "")

	body, err := ioutil.ReadFile(*configPath)
	if err != nil {
		fail("%s", err)
	}
	file, diags := hclsyntax.ParseConfig(body, *configPath, hcl.InitialPos)
	if diags.HasErrors() {
		fail("%s", diags.Error())
	}

	ctx := &hcl.EvalContext{Variables: map[string]cty.Value{}}
	if *varsPath != "" {
		varsBytes, err := ioutil.ReadFile(*varsPath)
		if err != nil {
			fail("%s", err)
		}
		vars := map[string]string{}
		if err := json.Unmarshal(varsBytes, &vars); err != nil {
			fail("vars %s: %s", *varsPath, err)
		}
		for name, value := range vars {
			ctx.Variables[name] = cty.StringVal(value)
		}
	}

	val, diags := hcldec.Decode(file.Body, spec, ctx)
	if diags.HasErrors() {
		fail("%s", diags.Error())
	}

	ty := val.Type()
	if *typeJSON != "" {
		ty, err = ctyjson.UnmarshalType([]byte(*typeJSON))
		if err != nil {
			fail("type %s: %s", *typeJSON, err)
		}
	}
	encoded, err := msgpack.Marshal(val, ty)
	if err != nil {
		fail("marshal: %s", err)
	}

	if *outPath != "" {
		if err := ioutil.WriteFile(*outPath, encoded, 0o644); err != nil {
			fail("%s", err)
		}
		return
	}
	fmt.Println(hex.EncodeToString(encoded))
}
