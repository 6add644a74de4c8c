package main

import (
	"go/scanner"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The log messages the documentation quotes are the ones flanneld prints: every quoted
// structured log line in README.md and Documentation/*.md must name a message that is a
// string literal of the daemon's code (cmd/, daemon/, diagnose/, pkg/, subnet/, backend/;
// tests, e2e/ and tools/ excluded), so that renaming a message without updating the docs
// fails here.
// A quoted log line is a code span or a line of a code block shaped as klog writes it:
// `"Message" key=value …` (also with klog's "E0102 15:04:05.000000 1 file.go:12] " or
// an elided "E… " header), or an excerpt that starts inside the message,
// `…message" key=value`. The values are not checked (they vary); the golden tests of
// each package check the texts of problems.
func TestDocumentedLogMessagesExist(t *testing.T) {
	literals := codeStrings(t, "../../cmd", "../../daemon", "../../diagnose", "../../pkg", "../../subnet", "../../backend")
	docs, _ := filepath.Glob("../../Documentation/*.md")
	docs = append(docs, "../../README.md")
	checked := 0
	for _, doc := range docs {
		data, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range quotedLogLines(string(data)) {
			checked++
			if q.excerpt {
				if !anyHasSuffix(literals, q.msg) {
					t.Errorf("%s: %q quotes a log message that ends with %q; no string of the code does", filepath.Base(doc), q.text, q.msg)
				}
				continue
			}
			if !literals[q.msg] {
				t.Errorf("%s: %q quotes the log message %q, which is no string of the code", filepath.Base(doc), q.text, q.msg)
			}
		}
	}
	if checked < 10 {
		t.Errorf("only %d quoted log lines found in the docs: is the pattern still right?", checked)
	}
}

// quoted is one log line quoted in a document.
type quoted struct {
	text    string // as quoted
	msg     string // the message
	excerpt bool   // msg is only the end of the message
}

var (
	codeSpan  = regexp.MustCompile("(?s)`([^`]+)`")
	klogHead  = regexp.MustCompile(`^[IWEF](\d{4} [0-9:.]+ +\d+ [\w.-]+:\d+\]|…) `)
	keyValue  = regexp.MustCompile(`^( [A-Za-z][A-Za-z0-9]*=.*| ….*)?$`)
	excerptRE = regexp.MustCompile(`^([^"` + "`" + `]+)" [A-Za-z][A-Za-z0-9]*=`)
)

// quotedLogLines finds the quoted log lines of a Markdown text: code spans and the lines
// of fenced code blocks.
func quotedLogLines(md string) []quoted {
	var cands []string
	inBlock := false
	var prose strings.Builder
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inBlock = !inBlock
			continue
		}
		if inBlock {
			cands = append(cands, line)
			continue
		}
		prose.WriteString(line + "\n")
	}
	for _, m := range codeSpan.FindAllStringSubmatch(prose.String(), -1) {
		cands = append(cands, strings.Join(strings.Fields(m[1]), " ")) // a span may wrap
	}
	var out []quoted
	for _, c := range cands {
		s := klogHead.ReplaceAllString(c, "")
		if strings.HasPrefix(s, `"`) {
			q, err := strconv.QuotedPrefix(s)
			if err != nil || !keyValue.MatchString(s[len(q):]) {
				continue
			}
			msg, _ := strconv.Unquote(q)
			alone := len(s) == len(q) // no key=value follows
			if msg == "" || alone && (msg[0] < 'A' || msg[0] > 'Z' || !strings.Contains(msg, " ")) {
				continue // JSON such as `"EnableIPv4": false`, or a value such as `"VIN"`
			}
			out = append(out, quoted{text: c, msg: msg})
			continue
		}
		if m := excerptRE.FindStringSubmatch(s); m != nil && strings.Contains(m[1], " ") {
			out = append(out, quoted{text: c, msg: strings.TrimPrefix(m[1], "…"), excerpt: true})
		}
	}
	return out
}

// codeStrings returns the values of every string literal in the non-test Go files
// under dirs.
func codeStrings(t *testing.T, dirs ...string) map[string]bool {
	t.Helper()
	out := make(map[string]bool)
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			fset := token.NewFileSet()
			var s scanner.Scanner
			s.Init(fset.AddFile(path, -1, len(src)), src, nil, 0)
			for {
				_, tok, lit := s.Scan()
				if tok == token.EOF {
					break
				}
				if tok == token.STRING {
					if v, err := strconv.Unquote(lit); err == nil {
						out[v] = true
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func anyHasSuffix(set map[string]bool, suffix string) bool {
	for s := range set {
		if strings.HasSuffix(s, suffix) {
			return true
		}
	}
	return false
}
