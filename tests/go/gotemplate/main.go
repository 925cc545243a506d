// gotemplate renders Grafana plugin-route templates with Go's own text/template, the way Grafana's
// datasource proxy does (grafana/grafana pkg/api/pluginproxy/utils.go, interpolateString: a template named
// "content" with one extra function, orEmpty, executed on {JsonData map[string]any, SecureJsonData
// map[string]string}; default missingkey option, so a missing key prints "<no value>").
//
// stdin:  {"templates": ["Token {{ .SecureJsonData.influxToken }}", ...], "jsonData": {...}, "secureJsonData": {...}}
// stdout: [{"out": "Token <no value>"}, {"error": "..."}, ...], one entry per template, in order.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
)

type input struct {
	Templates      []string          `json:"templates"`
	JSONData       map[string]any    `json:"jsonData"`
	SecureJSONData map[string]string `json:"secureJsonData"`
}

// The field names are the ones route templates use: {{ .JsonData.x }}, {{ .SecureJsonData.y }}.
type data struct {
	JsonData       map[string]any
	SecureJsonData map[string]string
}

type result struct {
	Out   *string `json:"out,omitempty"`
	Error string  `json:"error,omitempty"`
}

func render(text string, d data) (string, error) {
	funcs := template.FuncMap{
		"orEmpty": func(v any) any {
			if v == nil {
				return ""
			}
			return v
		},
	}
	t, err := template.New("content").Funcs(funcs).Parse(text)
	if err != nil {
		return "", fmt.Errorf("could not parse template %s", text)
	}
	var b strings.Builder
	if err := t.Execute(&b, d); err != nil {
		return "", fmt.Errorf("failed to execute template %s", text)
	}
	return b.String(), nil
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Fprintln(os.Stderr, "gotemplate: bad input:", err)
		os.Exit(2)
	}
	if in.JSONData == nil {
		in.JSONData = map[string]any{}
	}
	if in.SecureJSONData == nil {
		in.SecureJSONData = map[string]string{}
	}
	out := make([]result, 0, len(in.Templates))
	for _, t := range in.Templates {
		s, err := render(t, data{JsonData: in.JSONData, SecureJsonData: in.SecureJSONData})
		if err != nil {
			out = append(out, result{Error: err.Error()})
			continue
		}
		out = append(out, result{Out: &s})
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(1)
	}
}
