package node

import (
	"embed"
	"io/fs"
	"net/http"
)

// The web page every node serves on its API port: share (encrypt in the
// browser, upload, show a link), open a link (download, decrypt, verify in
// the browser) and the cluster view. A few static files, embedded; the
// page loads nothing from anywhere else (its Content-Security-Policy says
// so), and the key of a link stays in the URL fragment, which browsers
// never send.
//
//go:embed web
var webFiles embed.FS

// webSecurity is sent with every page and asset.
var webSecurity = map[string]string{
	"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
		"img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
	"Referrer-Policy":        "no-referrer",
	"X-Content-Type-Options": "nosniff",
	"X-Frame-Options":        "DENY",
	"Cache-Control":          "no-cache",
}

func webHandler() (page func(name string) http.HandlerFunc, static http.Handler) {
	root, _ := fs.Sub(webFiles, "web")
	secure := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			for k, v := range webSecurity {
				w.Header().Set(k, v)
			}
			h.ServeHTTP(w, r)
		})
	}
	page = func(name string) http.HandlerFunc {
		return secure(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.ServeFileFS(w, r, root, name)
		})).ServeHTTP
	}
	return page, secure(http.StripPrefix("/static/", http.FileServerFS(root)))
}
