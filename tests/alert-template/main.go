// Command alert-template runs a Grafana notification template with Go's own text/template, the engine
// Grafana uses, on notification data given as JSON on stdin, and prints the result.
//
//	alert-template TEMPLATE_FILE NAME [email-html] < data.json
//
// With email-html, the result is then put where Grafana's email puts a contact point's message in the HTML
// part of the mail: `{{ .Message }}` in a div of an html/template (grafana/alerting
// templates/emails/ng_alert_notification.html; the text part, ng_alert_notification.txt, has it as is).
//
// It follows, without importing them (they pull in all of Alertmanager):
//   - the data: grafana/alerting templates/template_data.go (ExtendedData, ExtendedAlert, ExtendedAlerts
//     with Firing() and Resolved(); KV is Alertmanager's map[string]string);
//   - the engine: prometheus/alertmanager template/template.go (text/template with Option("missingkey=zero"),
//     templates defined by the user parsed into one set, ExecuteTemplate by name);
//   - the functions: only those of Alertmanager's DefaultFuncs (template/template.go) that tcplat's templates
//     may use, with the same definitions: toUpper, toLower, trimSpace, join, match, reReplaceAll,
//     stringSlice. Go's builtins (urlquery, printf, len, eq, lt, and, ...) come with text/template.
//
// A function the templates use but Grafana lacks fails here as "function not defined", as it would there.
package main

import (
	"encoding/json"
	"fmt"
	htmltemplate "html/template"
	"os"
	"regexp"
	"strings"
	"text/template"
	"time"
)

type KV map[string]string

type ExtendedAlert struct {
	Status       string             `json:"status"`
	Labels       KV                 `json:"labels"`
	Annotations  KV                 `json:"annotations"`
	StartsAt     time.Time          `json:"startsAt"`
	EndsAt       time.Time          `json:"endsAt"`
	GeneratorURL string             `json:"generatorURL"`
	Fingerprint  string             `json:"fingerprint"`
	SilenceURL   string             `json:"silenceURL"`
	DashboardURL string             `json:"dashboardURL"`
	PanelURL     string             `json:"panelURL"`
	Values       map[string]float64 `json:"values"`
	ValueString  string             `json:"valueString"`
	ImageURL     string             `json:"imageURL,omitempty"`
}

type ExtendedAlerts []ExtendedAlert

func (as ExtendedAlerts) Firing() []ExtendedAlert {
	res := []ExtendedAlert{}
	for _, a := range as {
		if a.Status == "firing" {
			res = append(res, a)
		}
	}
	return res
}

func (as ExtendedAlerts) Resolved() []ExtendedAlert {
	res := []ExtendedAlert{}
	for _, a := range as {
		if a.Status == "resolved" {
			res = append(res, a)
		}
	}
	return res
}

type ExtendedData struct {
	Receiver          string         `json:"receiver"`
	Status            string         `json:"status"`
	Alerts            ExtendedAlerts `json:"alerts"`
	GroupLabels       KV             `json:"groupLabels"`
	CommonLabels      KV             `json:"commonLabels"`
	CommonAnnotations KV             `json:"commonAnnotations"`
	ExternalURL       string         `json:"externalURL"`
	GroupKey          string         `json:"groupKey"`
}

var funcs = template.FuncMap{
	"toUpper":   strings.ToUpper,
	"toLower":   strings.ToLower,
	"trimSpace": strings.TrimSpace,
	"join":      func(sep string, s []string) string { return strings.Join(s, sep) },
	"match":     regexp.MatchString,
	"reReplaceAll": func(pattern, repl, text string) string {
		return regexp.MustCompile(pattern).ReplaceAllString(text, repl)
	},
	"stringSlice": func(s ...string) []string { return s },
}

func main() {
	if len(os.Args) != 3 && !(len(os.Args) == 4 && os.Args[3] == "email-html") {
		fmt.Fprintln(os.Stderr, "usage: alert-template TEMPLATE_FILE NAME [email-html] < data.json")
		os.Exit(2)
	}
	text, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var data ExtendedData
	if err := json.NewDecoder(os.Stdin).Decode(&data); err != nil {
		fmt.Fprintln(os.Stderr, "data:", err)
		os.Exit(2)
	}
	t, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(string(text))
	if err != nil {
		fmt.Fprintln(os.Stderr, "parse:", err)
		os.Exit(1)
	}
	var out strings.Builder
	if err := t.ExecuteTemplate(&out, os.Args[2], data); err != nil {
		fmt.Fprintln(os.Stderr, "execute:", err)
		os.Exit(1)
	}
	if len(os.Args) == 3 {
		fmt.Print(out.String())
		return
	}
	page := htmltemplate.Must(htmltemplate.New("email").Parse(`<div>{{ if gt (len .Message) 0 }}{{ .Message }}{{ end }}</div>`))
	if err := page.Execute(os.Stdout, map[string]string{"Message": out.String()}); err != nil {
		fmt.Fprintln(os.Stderr, "email:", err)
		os.Exit(1)
	}
}
