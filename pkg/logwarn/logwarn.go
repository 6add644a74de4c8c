// Package logwarn writes structured warnings through klog, which has no WarningS: a W line
// shaped like InfoS's, `"message" key="value" n=2`.
package logwarn

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"k8s.io/klog/v2"
)

// S logs msg and the key/value pairs as a warning, attributed to its caller.
func S(msg string, keysAndValues ...any) {
	klog.WarningDepth(1, Format(msg, keysAndValues...))
}

// Format renders what S writes, quoting values as klog's InfoS does.
func Format(msg string, keysAndValues ...any) string {
	var b strings.Builder
	b.WriteString(strconv.Quote(msg))
	for i := 0; i < len(keysAndValues); i += 2 {
		b.WriteByte(' ')
		fmt.Fprint(&b, keysAndValues[i])
		b.WriteByte('=')
		if i+1 >= len(keysAndValues) {
			b.WriteString(`"(MISSING)"`)
			break
		}
		b.WriteString(value(keysAndValues[i+1]))
	}
	return b.String()
}

func value(v any) string {
	switch x := v.(type) {
	case string:
		return strconv.Quote(x)
	case error:
		return strconv.Quote(x.Error())
	case fmt.Stringer:
		return strconv.Quote(x.String())
	case []string:
		var b strings.Builder
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false) // "a -> b" stays readable
		_ = enc.Encode(x)
		return strings.TrimSuffix(b.String(), "\n")
	}
	return fmt.Sprint(v)
}
