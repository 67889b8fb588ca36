package provider

import (
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

// The resource attributes hangar_pool and hangar_tenant_image declare alike:
// each builder takes the attribute's Markdown description (md derives the
// plain one) and fixes the rest, so the two resources cannot drift apart.

// md returns a schema description pair.
func md(s string) (string, string) { return stripMarkdown(s), s }

// nameAttribute is a required name (pool, app, tenant image) whose change
// replaces the resource.
func nameAttribute(description string) schema.StringAttribute {
	d, m := md(description)
	return schema.StringAttribute{Required: true, Description: d, MarkdownDescription: m,
		PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
		Validators:    []validator.String{nameValidator()}}
}

// imageAttribute is a required worker image reference.
func imageAttribute(description string) schema.StringAttribute {
	d, m := md(description)
	return schema.StringAttribute{Required: true, Description: d, MarkdownDescription: m,
		Validators: []validator.String{notBlankValidator()}}
}

// envAttribute is an optional map of non-secret environment variables.
func envAttribute(description string) schema.MapAttribute {
	d, m := md(description)
	return schema.MapAttribute{Optional: true, ElementType: types.StringType, Description: d, MarkdownDescription: m}
}

// minStandbyAttribute is a standby count per region, default 1.
func minStandbyAttribute(description string) schema.Int64Attribute {
	d, m := md(description)
	return schema.Int64Attribute{Optional: true, Computed: true, Default: int64default.StaticInt64(1), Description: d, MarkdownDescription: m,
		Validators: []validator.Int64{int64validator.AtLeast(0)}}
}

// forceDestroyAttribute is a flag, default false, that lets destroy go on
// while sessions run.
func forceDestroyAttribute(description string) schema.BoolAttribute {
	d, m := md(description)
	return schema.BoolAttribute{Optional: true, Computed: true, Default: booldefault.StaticBool(false), Description: d, MarkdownDescription: m}
}

// stableComputedAttribute is a computed string that keeps its state value
// across plans (an ID).
func stableComputedAttribute(description string) schema.StringAttribute {
	d, m := md(description)
	return schema.StringAttribute{Computed: true, Description: d, MarkdownDescription: m,
		PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()}}
}

// computedAttribute is a computed string that may change on any apply.
func computedAttribute(description string) schema.StringAttribute {
	d, m := md(description)
	return schema.StringAttribute{Computed: true, Description: d, MarkdownDescription: m}
}
