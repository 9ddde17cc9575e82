// Package archtest holds no code; its test enforces Atoll's layering: which
// package may import which, which package alone may use each of the four
// core libraries, that every package has a doc comment, and that no
// production package links the testing package.
package archtest
