package chart

import (
	"fmt"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

// Register is how every addon's constructor starts: it refuses nil or
// invalid args (validate is the args type's own check, a method
// expression such as (*MetalLBArgs).validate), registers the component as
// typ ("rack:addons:MetalLB") and returns the option that parents its
// children to it.
func Register[A any](ctx *pulumi.Context, typ, name string, args *A, validate func(*A) error, component pulumi.ComponentResource, opts ...pulumi.ResourceOption) (pulumi.ResourceOption, error) {
	if args == nil {
		return nil, fmt.Errorf("%s: args are required", strings.ToLower(typ[strings.LastIndex(typ, ":")+1:]))
	}
	if err := validate(args); err != nil {
		return nil, err
	}
	if err := ctx.RegisterComponentResource(typ, name, component, opts...); err != nil {
		return nil, err
	}
	return pulumi.Parent(component), nil
}
