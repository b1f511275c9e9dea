// Swagger UI over the hub's OpenAPI document; assets from the swagger-ui-bundle package (no CDN).
window.addEventListener("DOMContentLoaded", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.specUrl,
    dom_id: "#swagger-ui",
    deepLinking: false,
    persistAuthorization: false, // the token typed into "Authorize" is not kept in localStorage
    // "Try it out" acts for the signed-in tenant, as every API call must name one.
    requestInterceptor: function (request) {
      if (!request.headers["X-Tenant-ID"]) request.headers["X-Tenant-ID"] = root.dataset.tenant;
      return request;
    },
  });
});
