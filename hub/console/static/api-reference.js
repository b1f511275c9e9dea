// Swagger UI over the hub's OpenAPI document; assets from the swagger-ui-bundle package (no CDN).
window.addEventListener("DOMContentLoaded", function () {
  var root = document.getElementById("swagger-ui");
  fetch(root.dataset.specUrl, { credentials: "same-origin" })
    .then(function (response) { return response.json(); })
    .then(function (spec) {
      // "Try it out" acts for the signed-in tenant: its X-Tenant-ID parameter starts filled in.
      Object.values(spec.paths || {}).forEach(function (operations) {
        Object.values(operations).forEach(function (operation) {
          (operation.parameters || []).forEach(function (parameter) {
            if (parameter.in === "header" && parameter.name === "X-Tenant-ID") {
              parameter.schema = Object.assign({}, parameter.schema, { default: root.dataset.tenant });
            }
          });
        });
      });
      window.ui = SwaggerUIBundle({
        spec: spec,
        dom_id: "#swagger-ui",
        deepLinking: false,
        persistAuthorization: false, // the token typed into "Authorize" is not kept in localStorage
      });
    });
});
