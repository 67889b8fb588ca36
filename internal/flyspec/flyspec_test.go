package flyspec

import (
	"net/http"
	"testing"
)

func TestSpecLoads(t *testing.T) {
	doc, err := Spec()
	if err != nil {
		t.Fatal(err)
	}
	if doc.Paths.Value("/apps/{app_name}/machines") == nil {
		t.Fatal("machines path missing")
	}
	if got := OperationID(http.MethodPost, "/v1/apps/a/machines/m1/lease"); got != "Machines_create_lease" {
		t.Fatalf("OperationID = %q", got)
	}
}
