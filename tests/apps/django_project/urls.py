from django.urls import path

from . import views

urlpatterns = [
    path("", views.home),
    path("items/<int:item_id>", views.item),
    path("form", views.form),
    path("stream", views.stream),
]
