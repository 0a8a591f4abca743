# Turns the CUDA kernel templates under templates/ into a C++ string table compiled into the
# library, so that a user's machine needs no template files. ATTNJIT_TEMPLATE_DIR overrides
# them at run time for development (runtime/templates.cpp).
function(attnjit_embed_templates output files)
  set(out ${CMAKE_CURRENT_BINARY_DIR}/${output})
  add_custom_command(
    OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -DOUTPUT=${out} "-DFILES=${files}" -P ${PROJECT_SOURCE_DIR}/cmake/EmbedTemplatesScript.cmake
    DEPENDS ${files} ${PROJECT_SOURCE_DIR}/cmake/EmbedTemplatesScript.cmake
    COMMENT "Embedding kernel templates"
    VERBATIM)
endfunction()
