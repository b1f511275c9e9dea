// Swagger UI over the hub's OpenAPI document; assets from the swagger-ui-bundle package (no CDN).
window.addEventListener("DOMContentLoaded", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({ url: root.dataset.specUrl, dom_id: "#swagger-ui", deepLinking: false, persistAuthorization: false });
});
