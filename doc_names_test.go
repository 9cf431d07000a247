package kpush_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestDoc_NoInternalNamesInPublicValues: go doc prints an exported
// variable's or constant's declaration as written, so a value spelled with
// an internal package (ErrAuthentication = wire.ErrAuth) shows users a name
// they cannot use or look up. Every exported var and const of the root
// package must be declared without one.
func TestDoc_NoInternalNamesInPublicValues(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		internal := map[string]bool{} // local names of imported internal packages
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if !strings.Contains(path, "/internal/") {
				continue
			}
			local := filepath.Base(path)
			if imp.Name != nil {
				local = imp.Name.Name
			}
			internal[local] = true
		}
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || (g.Tok != token.VAR && g.Tok != token.CONST) {
				continue
			}
			for _, spec := range g.Specs {
				vs := spec.(*ast.ValueSpec)
				exported := false
				for _, n := range vs.Names {
					exported = exported || n.IsExported()
				}
				if !exported {
					continue
				}
				for _, v := range vs.Values {
					ast.Inspect(v, func(n ast.Node) bool {
						if sel, ok := n.(*ast.SelectorExpr); ok {
							if id, ok := sel.X.(*ast.Ident); ok && internal[id.Name] {
								t.Errorf("%s: %s is declared with %s.%s, an internal name go doc shows users",
									fset.Position(vs.Pos()), vs.Names[0].Name, id.Name, sel.Sel.Name)
							}
						}
						return true
					})
				}
			}
		}
	}
}
