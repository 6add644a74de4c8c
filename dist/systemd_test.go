package dist_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// This file runs a service's start commands the way systemd would, for tests without a
// service manager: the unit and its drop-ins merged, each command line split and its
// variables expanded with the environment files read just before it runs. Only what the
// units under test use is emulated; anything else fails the test instead of being
// guessed.

// service is what the tests need of a service unit after its drop-ins.
type service struct {
	envFiles []string // EnvironmentFile=, a leading "-" kept (file optional)
	startPre []string // ExecStartPre= command lines
	start    []string // ExecStart= command lines
}

// notEmulated are [Service] settings that would change the commands or their
// environment beyond what this file emulates.
var notEmulated = map[string]bool{
	"Environment": true, "PassEnvironment": true, "UnsetEnvironment": true, "ExecCondition": true,
	"ExecSearchPath": true, "RootDirectory": true, "RootImage": true,
}

// loadService reads a unit file and then its drop-ins as systemd merges them: list
// settings accumulate, an empty assignment clears the list.
func loadService(t *testing.T, files ...string) service {
	t.Helper()
	var s service
	for _, f := range files {
		for _, kv := range readUnitFile(t, f) {
			if kv.section != "Service" {
				continue
			}
			var list *[]string
			switch {
			case kv.key == "EnvironmentFile":
				list = &s.envFiles
			case kv.key == "ExecStartPre":
				list = &s.startPre
			case kv.key == "ExecStart":
				list = &s.start
			case notEmulated[kv.key]:
				t.Fatalf("%s: %s= is not emulated by the test", f, kv.key)
			default:
				continue
			}
			if kv.value == "" {
				*list = nil
			} else {
				*list = append(*list, kv.value)
			}
		}
	}
	return s
}

type unitSetting struct{ section, key, value string }

// readUnitFile parses systemd's unit file syntax: [Section] headers, Key=Value lines,
// comments (# and ;) and lines continued with a trailing backslash.
func readUnitFile(t *testing.T, path string) []unitSetting {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []unitSetting
	section, pending := "", ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			pending += cont + " "
			continue
		}
		line, pending = pending+line, ""
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = line[1 : len(line)-1]
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not a setting: %q", path, line)
		}
		out = append(out, unitSetting{section, strings.TrimSpace(k), strings.TrimSpace(v)})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// systemdCommand is a command line split into words, quotes removed; variables are
// expanded later, when it runs.
type systemdCommand struct {
	line          string
	ignoreFailure bool // "-" prefix
	words         []string
}

var (
	wholeVar = regexp.MustCompile(`^\$[A-Za-z_][A-Za-z0-9_]*$`)
	braceVar = regexp.MustCompile(`\$\{[A-Za-z_][A-Za-z0-9_]*\}|\$\$`)
)

func parseCommand(t *testing.T, line string) systemdCommand {
	t.Helper()
	c := systemdCommand{line: line}
	rest := line
	for len(rest) > 0 && strings.ContainsRune("-@:+!", rune(rest[0])) {
		if rest[0] != '-' {
			t.Fatalf("command prefix %q is not emulated: %s", rest[0], line)
		}
		c.ignoreFailure = true
		rest = rest[1:]
	}
	for {
		rest = strings.TrimLeft(rest, " \t")
		if rest == "" {
			break
		}
		var w string
		if q := rest[0]; q == '"' || q == '\'' {
			end := strings.IndexByte(rest[1:], q)
			if end < 0 {
				t.Fatalf("unbalanced quote: %s", line)
			}
			w, rest = rest[1:1+end], rest[2+end:]
			if rest != "" && rest[0] != ' ' && rest[0] != '\t' {
				t.Fatalf("text after a closing quote is not emulated: %s", line)
			}
		} else {
			end := strings.IndexAny(rest, " \t")
			if end < 0 {
				end = len(rest)
			}
			w, rest = rest[:end], rest[end:]
			if strings.ContainsAny(w, `"'`) {
				t.Fatalf("quotes inside a word are not emulated: %s", line)
			}
		}
		if strings.ContainsAny(w, `\%`) || w == ";" {
			t.Fatalf("escapes, specifiers and ';' are not emulated: %s", line)
		}
		c.words = append(c.words, w)
	}
	if len(c.words) == 0 || !filepath.IsAbs(c.words[0]) || strings.Contains(c.words[0], "$") {
		t.Fatalf("the emulation wants an absolute executable path: %s", line)
	}
	return c
}

// expand turns the words into argv as systemd does when the command runs: a word that is
// exactly $NAME becomes the variable's value split at whitespace (nothing when unset),
// ${NAME} anywhere becomes its value, $$ becomes $.
func (c systemdCommand) expand(t *testing.T, env map[string]string) []string {
	t.Helper()
	var argv []string
	for _, w := range c.words {
		if wholeVar.MatchString(w) {
			argv = append(argv, strings.Fields(env[w[1:]])...)
			continue
		}
		w = braceVar.ReplaceAllStringFunc(w, func(m string) string {
			if m == "$$" {
				return "\x00"
			}
			return env[m[2:len(m)-1]]
		})
		if strings.Contains(w, "$") {
			t.Fatalf("a $ that is neither $NAME as a word, ${NAME} nor $$ is not emulated: %s", c.line)
		}
		argv = append(argv, strings.ReplaceAll(w, "\x00", "$"))
	}
	return argv
}

// readEnvFile parses an environment file as systemd's EnvironmentFile= does: KEY=VALUE
// lines, comments (# and ;), values unquoted (outer whitespace dropped) or in single or
// double quotes.
func readEnvFile(t *testing.T, path string, env map[string]string) error {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	name := regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(k)
		if !ok || !name.MatchString(k) {
			t.Fatalf("%s: line not emulated: %q", path, line)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		if strings.ContainsAny(v, `"'\`) {
			t.Fatalf("%s: quoting or escapes not emulated: %q", path, line)
		}
		env[k] = v
	}
	return nil
}

// startService runs the service's ExecStartPre= and then ExecStart= commands the way
// systemd starts it: in order, each with systemd's PATH plus the environment files read
// again just before it, a failing command (without "-") ending the start. Every command
// runs in a mount and network namespace of its own in which root+dir is mounted over
// each of binds, so the commands see the test's files at their real paths and nothing
// of the host's routing; environment files must lie under binds.
func startService(t *testing.T, s service, path, root string, binds []string) (string, error) {
	t.Helper()
	var log bytes.Buffer
	for _, line := range append(append([]string{}, s.startPre...), s.start...) {
		c := parseCommand(t, line)
		env := map[string]string{"PATH": path}
		for _, ef := range s.envFiles {
			file, optional := strings.CutPrefix(ef, "-")
			if !underAny(file, binds) {
				t.Fatalf("environment file %s is not under the test's mounts %v", file, binds)
			}
			if err := readEnvFile(t, filepath.Join(root, file), env); err != nil {
				if optional && os.IsNotExist(err) {
					continue
				}
				return log.String(), fmt.Errorf("environment file %s: %w", file, err)
			}
		}
		argv := c.expand(t, env)
		if err := runMounted(argv, env, root, binds, &log); err != nil && !c.ignoreFailure {
			return log.String(), fmt.Errorf("%s: %w", line, err)
		}
	}
	return log.String(), nil
}

// runMounted runs argv with exactly the environment env, in a mount and network
// namespace of its own in which root+dir is mounted over each of binds, its command
// line and output going to log.
func runMounted(argv []string, env map[string]string, root string, binds []string, log *bytes.Buffer) error {
	var mounts strings.Builder
	for _, b := range binds {
		fmt.Fprintf(&mounts, "mount --bind %s %s || exit 125; ", shQuote(filepath.Join(root, b)), shQuote(b))
	}
	fmt.Fprintf(log, "$ %q\n", argv)
	cmd := exec.Command("/bin/sh", append([]string{"-c", mounts.String() + `exec "$@"`, "sh"}, argv...)...)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWNET}
	return cmd.Run()
}

func underAny(path string, dirs []string) bool {
	for _, d := range dirs {
		if strings.HasPrefix(path, strings.TrimSuffix(d, "/")+"/") {
			return true
		}
	}
	return false
}

func TestSystemdCommandExpansion(t *testing.T) {
	env := map[string]string{"OPTS": " --a  --b=1 ", "ONE": "x y", "EMPTY": ""}
	cases := []struct {
		line string
		want []string
	}{
		{"/usr/bin/env dockerd -H fd:// $OPTS $UNSET $EMPTY --c", []string{"/usr/bin/env", "dockerd", "-H", "fd://", "--a", "--b=1", "--c"}},
		{`/bin/x ${ONE} $ONE 'a b' --v=${ONE}${UNSET} $$ONE`, []string{"/bin/x", "x y", "x", "y", "a b", "--v=x y", "$ONE"}},
		{"-/bin/x", []string{"/bin/x"}},
	}
	for _, tc := range cases {
		if got := parseCommand(t, tc.line).expand(t, env); strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
			t.Errorf("%s: got %q, want %q", tc.line, got, tc.want)
		}
	}
}
