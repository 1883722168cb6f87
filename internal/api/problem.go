package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/limitd/limitd"
)

// writeJSON answers with a JSON body.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	// A write error means the client went away; there is nobody to tell.
	_ = enc.Encode(v)
}

// writeError answers with the problem+json form of err. Domain errors keep
// their code and message; anything else is logged once with the request id
// and the client is told only "internal error".
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var e *limitd.Error
	if !errors.As(err, &e) {
		s.log.ErrorContext(r.Context(), "internal error", "err", err, "request_id", requestID(r.Context()),
			"method", r.Method, "path", r.URL.Path)
		e = limitd.Errorf(limitd.CodeInternal, "internal error (request id %s)", requestID(r.Context()))
	}
	writeProblem(w, r, e)
}

func writeProblem(w http.ResponseWriter, r *http.Request, e *limitd.Error) {
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	switch {
	case e.Code == limitd.CodeNoSlots:
		// With long-polls a client may ask again at once.
		h.Set("Retry-After", "0")
	case e.RetryAfter > 0:
		h.Set("Retry-After", strconv.Itoa(e.RetryAfter))
	case e.Code.Status() == http.StatusServiceUnavailable:
		h.Set("Retry-After", "1")
	case e.Code == limitd.CodeUnauthorized:
		h.Set("WWW-Authenticate", `Bearer realm="limitd"`)
	}
	status := e.Code.Status()
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(limitd.Problem{
		Type:     e.Code.TypeURI(),
		Title:    e.Code.Title(),
		Status:   status,
		Detail:   e.Message,
		Code:     e.Code,
		Instance: r.URL.EscapedPath(),
	})
}

// decodeBody reads an optional JSON body into v. An empty body leaves v at
// its zero value. Unknown fields, trailing data, and bodies over the size
// limit are refused with a problem that names the rule.
func decodeBody(w http.ResponseWriter, r *http.Request, maxBody int64, v any) error {
	body := http.MaxBytesReader(w, r.Body, maxBody)
	data, err := io.ReadAll(body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return limitd.Errorf(limitd.CodeBodyTooLarge, "request body is larger than %d bytes", tooLarge.Limit)
		}
		return limitd.Errorf(limitd.CodeInvalidRequest, "reading request body: %v", err)
	}
	// Reading to EOF matters beyond decoding: only then does net/http watch
	// the connection and cancel the request's context when the client goes
	// away, which is how a vanished long-poll leaves the queue.
	if len(strings.TrimSpace(string(data))) == 0 {
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if dec.More() {
		return limitd.Errorf(limitd.CodeInvalidRequest, "request body has data after its JSON object: send one JSON object")
	}
	return nil
}

// jsonError turns a decoding error into a problem whose detail names the
// field and what was wrong with it.
func jsonError(err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return limitd.Errorf(limitd.CodeInvalidRequest, "request body is not valid JSON (at byte %d): %v", syntax.Offset, err)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return limitd.Errorf(limitd.CodeInvalidRequest, "request body must be a JSON object, not %s", typ.Value)
		}
		return limitd.Errorf(limitd.CodeInvalidRequest, "field %q must be %s, not %s", typ.Field, jsonKind(typ.Type.Kind().String()), typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return limitd.Errorf(limitd.CodeInvalidRequest, "request body is truncated JSON")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.TrimPrefix(err.Error(), "json: unknown field ")
		return limitd.Errorf(limitd.CodeInvalidRequest, "unknown field %s: see the API reference for the fields this request takes", field)
	}
	return limitd.Errorf(limitd.CodeInvalidRequest, "request body: %v", err)
}

func jsonKind(goKind string) string {
	switch goKind {
	case "int", "int64", "uint64":
		return "an integer"
	case "float64":
		return "a number"
	case "string":
		return "a string"
	case "ptr":
		return "a value of the right type"
	}
	return fmt.Sprintf("of type %s", goKind)
}
